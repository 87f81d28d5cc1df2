"""The one interface every backend implements (one small runner class per backend)."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import ModelError

MODEL_KEY = "dig2dig.model"
SCHEDULE_KEY = "dig2dig.schedule"

# The model's tensors, as the exporters write them and every backend reads them (docs/DESIGN.md).
INPUT_X = "x"  # float32 [N, C, H, W]: x_t
INPUT_T = "t"  # float32 [N]: the training timesteps
OUTPUT_Y = "y"  # float32 [N, C_out, H, W]: the raw output, epsilon first
INPUT_NAMES = (INPUT_X, INPUT_T)
OUTPUT_NAMES = (OUTPUT_Y,)
# Batch, height and width vary from call to call; channels are fixed by the model.
DYNAMIC_AXES: Dict[str, Dict[int, str]] = {INPUT_X: {0: "N", 2: "H", 3: "W"}, INPUT_T: {0: "N"},
                                           OUTPUT_Y: {0: "N", 2: "H", 3: "W"}}
FLOAT32 = "float32"  # every model tensor's element type, as backends name it for ``check_io``

# A model tensor as a backend reports it: element type and dimensions, None where the model leaves one dynamic.
Dims = Tuple[Optional[int], ...]
TensorSpec = Tuple[str, Dims]


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model, read from the model file's metadata."""

    in_channels: int
    out_channels: int
    learn_sigma: bool
    multiple: int
    precision: str
    schedule: Dict[str, Any]
    config: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str) -> "ModelInfo":
        """Parse ``dig2dig.model`` / ``dig2dig.schedule`` metadata; errors name ``source``."""
        for key in (MODEL_KEY, SCHEDULE_KEY):
            if key not in props:
                raise ModelError(f"{source}: model metadata '{key}' is missing "
                                 "(export the model with 'dig2dig export onnx')")
        try:
            model = json.loads(props[MODEL_KEY])
            schedule = json.loads(props[SCHEDULE_KEY])
            info = cls(in_channels=int(model["in_channels"]), out_channels=int(model["out_channels"]),
                       learn_sigma=bool(model["learn_sigma"]), multiple=int(model["multiple"]),
                       precision=str(model.get("precision", "fp32")), schedule=dict(schedule),
                       config=dict(model.get("config", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{source}: model metadata is malformed ({exc!r})") from exc
        if info.in_channels not in (1, 3) or info.multiple < 1:
            raise ModelError(f"{source}: unsupported model (in_channels={info.in_channels}, "
                             f"multiple={info.multiple})")
        return info

    def to_metadata(self) -> Dict[str, str]:
        """The metadata strings that ``from_metadata`` reads back."""
        model = {"in_channels": self.in_channels, "out_channels": self.out_channels,
                 "learn_sigma": self.learn_sigma, "multiple": self.multiple,
                 "precision": self.precision, "config": self.config}
        return {MODEL_KEY: json.dumps(model, sort_keys=True), SCHEDULE_KEY: json.dumps(self.schedule, sort_keys=True)}


def check_io(inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec], info: ModelInfo,
             source: str) -> None:
    """Refuse a model whose tensors are not the declared ones (names, float32, ranks, dynamic N/H/W,
    channel counts matching the metadata), so a wrong file fails when opened, not in the middle of a fusion."""
    for role, tensors, names in (("inputs", inputs, INPUT_NAMES), ("outputs", outputs, OUTPUT_NAMES)):
        if sorted(tensors) != sorted(names):
            raise ModelError(f"{source}: model {role} are {', '.join(sorted(tensors)) or 'none'}, "
                             f"dig2dig models have {role} {', '.join(names)}")
    expected: Dict[str, Dims] = {INPUT_X: (None, info.in_channels, None, None), INPUT_T: (None,),
                                 OUTPUT_Y: (None, info.out_channels, None, None)}
    for name, (dtype, dims) in {**inputs, **outputs}.items():
        axes = [DYNAMIC_AXES[name].get(axis, "C") for axis in range(len(expected[name]))]
        if dtype != FLOAT32:
            raise ModelError(f"{source}: model tensor {name} is {dtype}, dig2dig models take and return {FLOAT32}")
        if len(dims) != len(axes):
            raise ModelError(f"{source}: model tensor {name} has rank {len(dims)}, "
                             f"expected {len(axes)} ([{', '.join(axes)}])")
        for axis, (size, want) in enumerate(zip(dims, expected[name])):
            if want is None and size is not None:
                raise ModelError(f"{source}: model tensor {name} has a fixed {axes[axis]} of {size}, "
                                 f"dig2dig models take any {axes[axis]}")
            if want is not None and size is not None and size != want:
                raise ModelError(f"{source}: model tensor {name} has {size} channel(s), "
                                 f"the model metadata says {want}")


def in_batches(x: np.ndarray, t: np.ndarray, max_batch: int,
               run: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """``run(x, t)`` over consecutive slices of at most ``max_batch`` images (0: all at once), the outputs
    concatenated: for a backend that takes fewer images a call than the loop sends."""
    step = max_batch or len(x)
    if step >= len(x):
        return run(x, t)
    return np.concatenate([run(x[i:i + step], t[i:i + step]) for i in range(0, len(x), step)])


class Runner(ABC):
    """Runs the UNet: ``denoise(x, t)`` maps float32 ``[N, C, H, W]`` and ``[N]`` host arrays to the raw output.

    A runner with ``on_host`` True keeps its activations in host memory (onnxruntime on the CPU).
    A runner with ``on_device`` True (a GPU backend) also runs on device arrays through
    :meth:`denoise_device`, so ``api.fuse`` keeps the whole loop on the GPU (``runtime.gpu``).
    """

    info: ModelInfo
    on_device: bool = False
    on_host: bool = False  # its activations are in host memory, which the memory guard checks (runtime.memory)

    @abstractmethod
    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Raw model output ``[N, C_out, H, W]`` (epsilon first) for inputs x at training steps t."""

    def denoise_device(self, x: Any, t: Any, y: Any, stream_handle: Optional[int] = None) -> None:
        """Queue the model on device arrays: x ``[N, C, H, W]`` and t ``[N]`` in, y ``[N, C_out, H, W]``
        out, all C-contiguous float32 on the runner's GPU, on the CUDA stream ``stream_handle`` (default:
        the runner's own); nothing is copied to the host, so synchronise the stream before reading y.
        Only runners with ``on_device`` have it."""
        raise NotImplementedError(f"{type(self).__name__} runs on host arrays only (on_device is False)")

    def close(self) -> None:
        """Release backend resources (sessions, engines, buffers)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
