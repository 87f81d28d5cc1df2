"""dig2dig's TensorRT plan container: a small header in front of the serialized engine.

A bare TensorRT engine says nothing about the model it was built from, and loading one built by
another TensorRT version fails with an opaque error. The container carries what the runtime needs
to check and describe the engine before handing it to TensorRT:

    MAGIC (8 bytes) | format version (uint32 LE) | header length (uint32 LE) | header JSON | engine

The header JSON holds the TensorRT version the engine was built with, the optimisation profiles,
the ONNX model's ``dig2dig.*`` metadata (so ``ModelInfo`` needs no side file), the GPU it was built
on, the precision and the engine's byte count (which catches truncated files).

No TensorRT import here: the format is read, written and tested without it.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

from ..errors import ModelError

MAGIC = b"D2DGTRT\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, format version, header length

Shape3 = Tuple[int, int, int]


@dataclass(frozen=True)
class Profile:
    """One optimisation profile as ``(N, H, W)`` triples; the channel count comes from the model."""

    min: Shape3
    opt: Shape3
    max: Shape3

    def __post_init__(self) -> None:
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if len(shape) != 3 or any(int(v) < 1 for v in shape):
                raise ValueError(f"profile {name} must be three positive integers (N, H, W), got {shape}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile needs min <= opt <= max in every dimension, got "
                             f"min={describe_shape(self.min)} opt={describe_shape(self.opt)} "
                             f"max={describe_shape(self.max)}")

    def contains(self, n: int, height: int, width: int) -> bool:
        """Whether a batch of ``n`` images of ``height`` x ``width`` lies inside this profile."""
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (n, height, width), self.max))

    def describe(self) -> str:
        """``HxW,N`` ranges, as the CLI takes them."""
        return (f"min {describe_shape(self.min)}, opt {describe_shape(self.opt)}, "
                f"max {describe_shape(self.max)}")

    def to_json(self) -> Dict[str, Any]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Profile":
        return cls(*(_shape3(data[key]) for key in ("min", "opt", "max")))


def describe_shape(shape: Shape3) -> str:
    """``(N, H, W)`` as the CLI's ``HxW,N``."""
    return f"{shape[1]}x{shape[2]},{shape[0]}"


def _shape3(values: Any) -> Shape3:
    n, height, width = (int(v) for v in values)
    return n, height, width


@dataclass(frozen=True)
class PlanHeader:
    """What the container says about its engine."""

    tensorrt: str
    profiles: Tuple[Profile, ...]
    metadata: Dict[str, str]
    precision: str
    gpu_name: str = ""
    compute_capability: Tuple[int, int] = (0, 0)

    def to_json(self, engine_bytes: int) -> Dict[str, Any]:
        return {"tensorrt": self.tensorrt, "profiles": [p.to_json() for p in self.profiles],
                "metadata": dict(self.metadata), "precision": self.precision,
                "gpu": {"name": self.gpu_name, "compute_capability": list(self.compute_capability)},
                "engine_bytes": engine_bytes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PlanHeader":
        gpu = data.get("gpu", {})
        major, minor = (int(v) for v in gpu.get("compute_capability", (0, 0)))
        return cls(tensorrt=str(data["tensorrt"]),
                   profiles=tuple(Profile.from_json(p) for p in data["profiles"]),
                   metadata={str(k): str(v) for k, v in data["metadata"].items()},
                   precision=str(data["precision"]), gpu_name=str(gpu.get("name", "")),
                   compute_capability=(major, minor))


def pack(header: PlanHeader, engine: bytes) -> bytes:
    """The container's bytes: prefix, header JSON, engine."""
    text = json.dumps(header.to_json(len(engine)), sort_keys=True).encode("utf-8")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)) + text + engine


def unpack(data: bytes, source: str) -> Tuple[PlanHeader, bytes]:
    """Split container bytes into header and engine; errors are ``ModelError`` naming ``source``."""
    if len(data) < _PREFIX.size or data[:len(MAGIC)] != MAGIC:
        raise ModelError(f"{source}: not a dig2dig TensorRT plan (bad magic bytes); a bare engine "
                         "(e.g. from trtexec) is not accepted: build it with 'dig2dig export trt'")
    _, version, length = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ModelError(f"{source}: plan container format {version}, this dig2dig reads format "
                         f"{FORMAT_VERSION}: rebuild it with 'dig2dig export trt'")
    start = _PREFIX.size
    if len(data) < start + length:
        raise ModelError(f"{source}: truncated plan file (header cut short at {len(data)} bytes)")
    try:
        raw = json.loads(data[start:start + length].decode("utf-8"))
        header = PlanHeader.from_json(raw)
        expected = int(raw["engine_bytes"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{source}: corrupt plan header ({exc!r})") from exc
    engine = data[start + length:]
    if len(engine) != expected:
        raise ModelError(f"{source}: truncated or corrupt plan file (engine has {len(engine)} bytes, "
                         f"the header says {expected})")
    return header, engine


def read_plan(path: str) -> Tuple[PlanHeader, bytes]:
    """Read a plan container from ``path``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: plan file not found") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read plan file ({exc.strerror})") from exc
    return unpack(data, path)


def check_tensorrt_version(header: PlanHeader, source: str, running: str) -> None:
    """Engines only load in the TensorRT version that built them: say so before TensorRT does."""
    if header.tensorrt != running:
        raise ModelError(f"{source}: engine built with TensorRT {header.tensorrt}, this is TensorRT "
                         f"{running}; rebuild the plan on this machine with 'dig2dig export trt'")


def check_device(header: PlanHeader, source: str, compute_capability: Tuple[int, int]) -> None:
    """Engines are compiled for one GPU architecture: refuse another with a readable message."""
    if header.compute_capability != (0, 0) and tuple(compute_capability) != header.compute_capability:
        built = "sm_{}{}".format(*header.compute_capability)
        here = "sm_{}{}".format(*compute_capability)
        raise ModelError(f"{source}: engine built for {header.gpu_name or 'another GPU'} ({built}), this GPU "
                         f"is {here}; rebuild the plan on this device with 'dig2dig export trt'")
