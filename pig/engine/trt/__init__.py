"""TensorRT engine building, plan cache and CUDA memory helpers (all imports of tensorrt and
cuda-python are lazy and happen only after :func:`pig.engine.host.gpu.probe_gpu` found a GPU)."""
