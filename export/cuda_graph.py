"""A CUDA graph through ``torch.cuda.graph``, for ``runtime.graph.GraphedLoop`` over the PyTorch runner.

The graph interface of ``runtime/graph.py`` (``capture(stream)``, ``replay(stream)``, ``close()``)
on PyTorch's capture: the pycuda stream is wrapped as a ``torch.cuda.ExternalStream``, so our
kernels queued on it are captured together with the UNet, and PyTorch's caching allocator takes
the UNet's memory from the graph's private pool while capturing (the driver-API graph of
``runtime.graph.DriverGraph`` would leave the allocator unaware of the capture). For benchmarks
and verification only, as the PyTorch runner.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


class TorchGraph:
    """One ``torch.cuda.CUDAGraph``, captured from and replayed on a pycuda stream of ``device``."""

    def __init__(self, device: Any) -> None:
        self.device = torch.device(device)
        self.graph = torch.cuda.CUDAGraph()

    def _stream(self, stream: Any) -> torch.cuda.ExternalStream:
        return torch.cuda.ExternalStream(stream.handle, device=self.device)

    @contextmanager
    def capture(self, stream: Any) -> Iterator[None]:
        """Capture what the body queues on ``stream`` (PyTorch's work included)."""
        with torch.cuda.graph(self.graph, stream=self._stream(stream)):
            yield

    def replay(self, stream: Any) -> None:
        """Queue one replay of the graph on ``stream``."""
        with torch.cuda.stream(self._stream(stream)):
            self.graph.replay()

    def close(self) -> None:
        """Free the graph and its memory pool's hold (the caller waits for replays first)."""
        self.graph.reset()
