"""The host: CPUs, the GPU probe, durable file writes, native library loading."""
