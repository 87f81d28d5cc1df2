"""Checkpoints and model configs: read, write, and load into a ``UNetModel``.

A checkpoint is a plain state dict (parameter name -> tensor) in one of three formats, chosen by
suffix: ``.pt``/``.pth`` (``torch.save``, as guided-diffusion ships its models), ``.npz`` and
``.safetensors``. Every failure to read or fit a file is a ``ModelError`` naming the file.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..runtime.errors import InputError, ModelError
from ..runtime.atomic import atomic_replace
from .unet import UNetModel, create_model, resolve_config

PathLike = Union[str, Path]
FORMATS = (".pt", ".pth", ".npz", ".safetensors")
# Keys of DDFM's model config that are not create_model arguments.
IGNORED_CONFIG_KEYS = ("model_path",)
# Config values guided-diffusion writes as comma-separated strings; JSON files may hold lists.
LIST_CONFIG_KEYS = ("channel_mult", "attention_resolutions")
READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, KeyError, zipfile.BadZipFile, SafetensorError)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ModelError(f"{path}: unsupported checkpoint format '{suffix}' (use one of {', '.join(FORMATS)})")
    return suffix


def _first_line(text: str, exc: BaseException) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a state dict of tensors from ``.pt``/``.pth``, ``.npz`` or ``.safetensors``.

    Keys come in the order they were saved (safetensors: sorted by name).

    ``.pt`` files are unpickled with ``weights_only=True``: a pickle holding anything but tensors
    and plain containers is refused rather than executed.
    """
    path = Path(path)
    suffix = _format(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                state: Any = {key: torch.from_numpy(data[key]) for key in data.files}
        elif suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's refusal names the reason ("Unsupported global: ...") after this marker, then
        # advises how to allow it: keep only the reason's first sentence.
        reason = str(exc).partition("WeightsUnpickler error:")[2] or str(exc)
        raise ModelError(f"{path}: not a plain state dict of tensors, or corrupt; refusing to unpickle it "
                         f"({_first_line(reason, exc).split('. ')[0]})") from exc
    except READ_ERRORS as exc:
        raise ModelError(f"{path}: unreadable checkpoint, truncated or corrupt? "
                         f"({_first_line(str(exc), exc)})") from exc
    if not isinstance(state, Mapping):
        raise ModelError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{path}: entry '{key}' is a {type(value).__name__}, not a tensor "
                             "(expected a plain state dict)")
    if not state:
        raise ModelError(f"{path}: checkpoint holds no tensors")
    return dict(state)


def save_state_dict(state: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """Write a state dict in the format named by the suffix of ``path``, atomically."""
    path = Path(path)
    suffix = _format(path)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    with atomic_replace(path) as (staged,):
        if suffix == ".npz":
            arrays: Dict[str, Any] = {key: value.numpy() for key, value in tensors.items()}
            with open(staged, "wb") as f:
                np.savez(f, **arrays)
        elif suffix == ".safetensors":
            save_file(tensors, str(staged))
        else:
            torch.save(tensors, staged)


def state_dict_mismatch(state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> Optional[str]:
    """Describe the first missing, unexpected or mis-shaped key of ``state`` for ``model``, or None."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = [key for key in expected if key not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"missing key '{missing[0]}'{more}"
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        return f"unexpected key '{unexpected[0]}'{more}"
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            return f"key '{key}' has shape {tuple(state[key].shape)}, the config expects {shape}"
    return None


def load_model(checkpoint: PathLike, config: Mapping[str, Any]) -> UNetModel:
    """Build the UNet described by create_model keywords ``config`` with the weights of ``checkpoint``.

    The model is built on the meta device and takes the checkpoint tensors as its parameters
    (converted to float32), so no memory or time goes into a random initialisation.
    """
    state = load_state_dict(checkpoint)
    with torch.device("meta"):
        model = create_model(**config)
    problem = state_dict_mismatch(state, model)
    if problem:
        raise ModelError(f"{checkpoint}: checkpoint does not fit the model config: {problem}")
    for key, value in state.items():
        if not value.is_floating_point():
            raise ModelError(f"{checkpoint}: key '{key}' has non-float dtype {value.dtype}")
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True, assign=True)
    return model.eval()


def load_config(path: PathLike) -> Dict[str, Any]:
    """Read create_model keywords from JSON and complete them with guided-diffusion's defaults.

    Accepts a plain keyword dict (DDFM's model config, whose ``model_path`` is ignored) or a dict
    with a ``create_model_kwargs`` entry (the shape of the reference configs; other entries are
    ignored). ``channel_mult`` and ``attention_resolutions`` may be lists.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read model config ({exc})") from exc
    if isinstance(data, dict) and "create_model_kwargs" in data:
        data = data["create_model_kwargs"]
    if not isinstance(data, dict):
        raise InputError(f"{path}: model config must be a JSON object of create_model keywords")
    config = {key: value for key, value in data.items() if key not in IGNORED_CONFIG_KEYS}
    for key in LIST_CONFIG_KEYS:
        if isinstance(config.get(key), list):
            config[key] = ",".join(str(v) for v in config[key])
    try:
        return resolve_config(config)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
