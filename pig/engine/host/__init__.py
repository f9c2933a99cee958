"""The host: CPUs, the GPU probe, durable file writes, regular-file reads, native library
loading."""
