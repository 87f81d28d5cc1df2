"""``dig2dig_fuse`` on Triton's Python backend: one pair of frames in, the fused frame out.

Runs ``Fuser`` with a runner whose ``denoise`` sends each denoising batch to ``dig2dig_unet`` through
Triton's BLS, so the server batches the UNet calls of the fusions that its instances run at once. Written
into the repository as ``dig2dig_fuse/1/model.py`` by ``dig2dig export triton``.

Inputs: ``A`` and ``B`` (UINT8) or ``A16`` and ``B16`` (UINT16), ``[H, W, C]`` with C 1 (grey) or 3 (BGR,
OpenCV's order), one of each role; ``TASK``: ``[1]`` string, ivf, mif, mef or mff. Output ``FUSED``: UINT8
``[H, W, C]``, C 3 (BGR) if a source is colour, else 1. The config's parameters hold the prior's metadata
(``dig2dig.model``, ``dig2dig.schedule``), the UNet model's name and batch limit, ``max_pixels`` and any
``Settings`` field as JSON (``steps``: ``"4"``); the task's defaults fill in the rest. A bad request is an
error response to its client alone.
"""
import json
from typing import Any, Dict, List, Tuple

import numpy as np
import triton_python_backend_utils as pb_utils

from dig2dig.export.triton import MAX_BATCH_PARAMETER, MAX_PIXELS_PARAMETER, UNET_PARAMETER
from dig2dig.runtime.backends.base import INPUT_T, INPUT_X, OUTPUT_Y, ModelInfo, Runner, in_batches
from dig2dig.runtime.client import FUSED_OUTPUT, SOURCE_INPUTS, TASK_INPUT
from dig2dig.runtime.errors import Dig2DigError, InputError, ModelError
from dig2dig.runtime.fuser import Fuser
from dig2dig.runtime.settings import FIELD_NAMES, TASKS, Limits, check_task, resolve


class TritonUnetRunner(Runner):
    """The prior served by another model of this server, called through BLS in batches of at most ``max_batch``."""

    def __init__(self, model_name: str, info: ModelInfo, max_batch: int):
        self.model_name, self.info, self.max_batch = model_name, info, max_batch

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return in_batches(x, t, self.max_batch, self._call)

    def _call(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """One BLS request of ``dig2dig_unet``, at most ``max_batch`` images."""
        request = pb_utils.InferenceRequest(
            model_name=self.model_name, requested_output_names=[OUTPUT_Y],
            inputs=[pb_utils.Tensor(INPUT_X, np.ascontiguousarray(x, dtype=np.float32)),
                    pb_utils.Tensor(INPUT_T, np.ascontiguousarray(t, dtype=np.float32)[:, None])])
        response = request.exec()
        if response.has_error():
            raise ModelError(f"{self.model_name}: {response.error().message()}")
        return np.array(pb_utils.get_output_tensor_by_name(response, OUTPUT_Y).as_numpy())


def setting_value(text: str) -> Any:
    """A setting parameter's value: JSON (``4``, ``0.5``, ``[999, 500, 0]``), else the string itself (``dig``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def frame(request: Any, names: Tuple[str, str]) -> np.ndarray:
    """One role's frame, (H, W) grey or (H, W, 3) BGR, from its 8-bit or 16-bit input (exactly one of them)."""
    given = [(name, tensor) for name in names
             if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of the inputs {' or '.join(names)} "
                         f"({'both' if given else 'neither'} given)")
    name, tensor = given[0]
    pixels = tensor.as_numpy()
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or 0 in pixels.shape:
        raise InputError(f"{name}: expected [H, W, C] with C 1 (grey) or 3 (BGR), got shape {list(pixels.shape)}")
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def task_of(request: Any) -> str:
    """The request's ``TASK``, checked against ``settings.TASKS``."""
    value = pb_utils.get_input_tensor_by_name(request, TASK_INPUT).as_numpy().reshape(-1)[0]
    task = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    check_task(task)
    return task


class TritonPythonModel:
    """One ``Fuser`` per task (made on its first request) over ``TritonUnetRunner``."""

    def initialize(self, args: Dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        source = f"{config['name']} config parameters"
        info = ModelInfo.from_metadata(parameters, source)
        self.runner = TritonUnetRunner(parameters[UNET_PARAMETER], info, int(parameters[MAX_BATCH_PARAMETER]))
        self.limits = Limits(max_pixels=int(parameters[MAX_PIXELS_PARAMETER]))
        overrides = {key: setting_value(value) for key, value in parameters.items() if key in FIELD_NAMES}
        self.settings = {task: resolve(task, **overrides) for task in TASKS}  # a bad value fails the load
        self.fusers: Dict[str, Fuser] = {}
        self.logger = pb_utils.Logger

    def fuse(self, request: Any) -> np.ndarray:
        """The FUSED output of one request: [H, W, C] uint8."""
        task = task_of(request)
        a, b = (frame(request, names) for names in SOURCE_INPUTS)
        fuser = self.fusers.get(task)
        if fuser is None:
            fuser = self.fusers[task] = Fuser(task, settings=self.settings[task], runner=self.runner,
                                              limits=self.limits)
        fused = fuser(a, b)
        return fused if fused.ndim == 3 else fused[..., None]

    def execute(self, requests: List[Any]) -> List[Any]:
        responses = []
        for request in requests:
            try:
                fused = self.fuse(request)
            except InputError as exc:  # the request's fault: HTTP 400, gRPC INVALID_ARGUMENT
                responses.append(self.error(str(exc), pb_utils.TritonError.INVALID_ARG))
            except Dig2DigError as exc:
                responses.append(self.error(str(exc), pb_utils.TritonError.INTERNAL))
            except Exception as exc:  # anything else is ours: logged, and reported in one line
                self.logger.log_error(f"dig2dig_fuse: {type(exc).__name__}: {exc}")
                message = f"internal error: {type(exc).__name__}: {exc}"
                responses.append(self.error(message, pb_utils.TritonError.INTERNAL))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(FUSED_OUTPUT, fused)]))
        return responses

    @staticmethod
    def error(message: str, code: int) -> Any:
        """A response that carries only an error."""
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

    def finalize(self) -> None:
        for fuser in self.fusers.values():
            fuser.close()
