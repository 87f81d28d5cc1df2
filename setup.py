"""dig2dig: Dig2DIG diffusion image fusion for the edge.

The repository folders form one import namespace when installed:
``export/`` -> ``dig2dig.export``, ``runtime/`` -> ``dig2dig.runtime``,
``kernels/`` -> ``dig2dig.kernels``, ``calibration/`` -> ``dig2dig.calibration``,
``models/`` -> ``dig2dig.models`` (the shipped default prior).
"""
from setuptools import setup

PACKAGES = {
    "dig2dig": "dig2dig",
    "dig2dig.export": "export",
    "dig2dig.runtime": "runtime",
    "dig2dig.runtime.backends": "runtime/backends",
    "dig2dig.kernels": "kernels",
    "dig2dig.calibration": "calibration",
    "dig2dig.models": "models",
}

setup(
    name="dig2dig",
    version="0.1.0",
    description="Diffusion image fusion with Diffusion Information Gains (Dig2DIG on DDFM), lean runtime",
    python_requires=">=3.8",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={
        "dig2dig.kernels": ["*.cu", "*.cuh", "prebuilt/*.cubin", "prebuilt/*.ptx", "prebuilt/manifest.json"],
        "dig2dig.models": ["default/*"],
        "dig2dig.export": ["triton_models/*.py"],  # the Python-backend models 'dig2dig export triton' copies
    },
    install_requires=[
        "numpy>=1.21",
        # Headless build: CI machines and Jetsons without a desktop have no libGL,
        # which the plain opencv-python wheel needs at import. Same cv2 API.
        "opencv-python-headless>=4.5",
    ],
    extras_require={
        "ort": ["onnxruntime>=1.15"],
        "gpu": ["pycuda>=2022.1"],
        "export": ["torch>=2.1", "onnx>=1.14", "onnxscript", "safetensors>=0.4", "onnxruntime>=1.15", "tqdm>=4.62"],
        "eval": ["scipy>=1.7", "scikit-image>=0.19", "matplotlib>=3.5"],
        # 'dig2dig serve': Triton Inference Server from PyPI. Its Python backend needs numpy < 2, so install this
        # in an environment of its own; elsewhere 'dig2dig serve' makes one (docs/SERVING.md).
        "serve": ["nvidia-pytriton~=0.7.0", "numpy<2", "onnxruntime>=1.15"],
        "test": [
            "pytest>=7", "torch>=2.1", "onnx>=1.14", "onnxscript", "safetensors>=0.4", "tqdm>=4.62",
            "onnxruntime>=1.15", "scipy>=1.7", "scikit-image>=0.19", "mypy>=1.5", "hypothesis>=6",
            # CUDA 11.8's NVRTC and ptxas: build the kernels for sm_72 and rebuild the shipped binaries
            # (kernels/prebuilt.py), byte for byte with this exact version.
            "nvidia-cuda-nvrtc-cu11==11.8.89", "nvidia-cuda-nvcc-cu11==11.8.89",
        ],
    },
    entry_points={"console_scripts": ["dig2dig = dig2dig.cli:main"]},
)
