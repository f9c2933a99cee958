"""Build and install pig-engine: Python packages, console scripts and the C++ extension."""

import re
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

# the version is written once, in pig/__init__.py (read as text: nothing is imported here)
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (Path(__file__).parent / "pig" / "__init__.py").read_text(), re.M).group(1)

preprocess_ext = Pybind11Extension(
    "pig._preprocess",
    sources=["cpp_ext/preprocess.cpp"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

# Every range below is tested at both ends: `make test` runs scripts/check_install.sh, which
# installs the runtime + serve extra into fresh venvs at the newest versions the ranges allow
# and at their lower bounds, and runs the user path there (docs/install.md).
SERVE = [
    "fastapi>=0.165,<0.166",
    "uvicorn>=0.54,<0.55",
    "uvloop>=0.23,<0.24",
    "httptools>=0.9,<0.10",
    "prometheus-client>=0.26,<0.27",
    "fastapi-offline>=1.7.7,<1.8",  # Swagger UI and ReDoc assets: /docs and /redoc offline
]
RAY = "ray[data]==2.60.0"
WATCH = "watchdog>=6,<8"  # pig-engine watch (tested with 7.1)
S3 = "s3fs>=2025.9"  # s3:// sources (tested with 2026.9: it pins fsspec to its own version)
# GPU hosts: one extra per CUDA major, every pin built for that major (checked in CI by
# scripts/check_gpu_extras.py from PyPI metadata). cu12 runs on drivers >= R525, cu13 needs
# >= R580. onnxruntime-gpu shares its module with onnxruntime: docs/gpu.md says how to keep
# its CUDA provider.
GPU_EXTRAS = {
    "gpu-cu12": [
        "tensorrt-cu12>=10.9,<12",
        "cuda-python>=12.6,<13",
        "onnxruntime-gpu[cuda,cudnn]>=1.20,<1.27",  # 1.27 moved to CUDA 13
    ],
    "gpu-cu13": [
        "tensorrt-cu13>=10.13,<12",
        "cuda-python>=13,<14",
        "onnxruntime-gpu[cuda,cudnn]>=1.27,<1.32",
    ],
    # TensorRT-RTX: same Python API, builds engines without a GPU (CPU-only AOT); runs
    # them on RTX-class GPUs and compute capability 7.5/8.0/8.6/8.9/12.x, not Hopper.
    "trt-rtx": [
        "tensorrt-rtx-cu12-bindings==1.7.1.116",
        "tensorrt-rtx-cu12-libs==1.7.1.116",
        "cuda-python>=12.6,<13",
    ],
}

setup(
    name="pig-engine",
    version=VERSION,
    description="Production inference for PIG text-to-video retrieval: ONNX, TensorRT, usearch.",
    python_requires=">=3.11",
    packages=find_packages(include=["pig", "pig.*"]),
    package_data={"pig": ["data/*", "*.pyi"], "pig.engine.serve": ["static/*"]},
    ext_modules=[preprocess_ext],
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "numpy>=1.26,<2.5",
        "onnxruntime>=1.18,<1.33",
        "usearch>=2.12,<2.27",
        "xxhash==4.1.0",  # index file checksums (3+ GB/s; sha256 runs at ~0.5 GB/s here)
        "av>=18,<18.2",
        "tokenizers>=0.19,<0.24",
        "click>=8.1,<8.6",
        "tqdm>=4.66,<4.71",
    ],
    extras_require={
        # Export needs PyTorch; pinned so a fresh machine never pulls a CUDA build.
        "export": ["torch==2.13.0", "onnx>=1.23,<1.24", "onnxscript>=0.7,<0.8"],
        **GPU_EXTRAS,
        # `pig-engine serve`: the HTTP service (uvloop + httptools: uvicorn's fast loop/parser).
        "serve": SERVE,
        # `pig-engine index --runner ray`: every Ray node installs the runtime + this extra
        "ray": [RAY],
        # NVDEC decoding (pig.engine.media.nvdec): NVIDIA GPU hosts only
        "nvdec": ["pynvvideocodec==2.2.4"],
        # `pig-engine watch`: file-system events (inotify) or polling
        "watch": [WATCH],
        # videos in object storage or behind URLs (fsspec): s3://, gs://, http(s)://
        "s3": [S3],
        "gcs": ["gcsfs>=2025.9"],
        "http": ["aiohttp>=3.9,<4"],
        # --segments shots: PySceneDetect with its PyAV backend (av is a runtime dependency)
        "shots": ["scenedetect==0.7.2"],
        "dev": [
            "pytest>=9.2,<9.3",
            "hypothesis==6.170.17",
            "ruff>=0.17,<0.18",
            "transformers==4.57.6",
            "decord==0.6.0",
            "opencv-python-headless>=5.1,<5.2",
            *SERVE,
            "httpx>=0.28,<0.29",
            "schemathesis>=4.32,<4.33",
            "playwright>=1.65,<1.66",  # drives Debian's chromium; never `playwright install`
            "openai>=3.63,<3.64",  # the official SDK against /v1/embeddings and /v1/models
            "uv>=0.13,<0.14",  # the fresh-venv install check (scripts/check_install.sh)
            RAY,
            "scenedetect==0.7.2",
            WATCH,
            S3,  # with aiohttp: the http(s):// tests too
            "moto[server]>=5.1,<6",  # a real S3-compatible server on 127.0.0.1 for the tests
            "faiss-cpu>=1.15,<1.16",  # bench_search: build and search vs FAISS HNSW
            # a real TensorRT builder in CI: every graph is parsed and AOT-compiled
            "tensorrt-rtx-cu12-bindings==1.7.1.116",
            "tensorrt-rtx-cu12-libs==1.7.1.116",
            # make lint: the import layers, types and the documentation site
            "import-linter>=2.16,<2.17",
            "mypy>=2.4,<2.5",
            "types-tqdm>=4.70,<4.71",
            "mkdocs>=1.6,<1.7",
            # make bench: the figures in docs/figures/
            "matplotlib>=3.11,<3.12",
        ],
    },
    entry_points={
        "console_scripts": [
            "pig-export=pig.startup:pig_export",
            "pig-engine=pig.startup:pig_engine",
            "pig-eval=pig.startup:pig_eval",
        ]
    },
)
