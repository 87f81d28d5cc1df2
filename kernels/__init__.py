"""Kernels: each a NumPy function (the CPU path and the reference) and a CUDA kernel of the same name."""
from . import numpy_ops as NUMPY_OPS

__all__ = ["NUMPY_OPS"]
