"""Media: discovery, regular-file checks, decoders, sampling, segments, shots, preprocessing."""
