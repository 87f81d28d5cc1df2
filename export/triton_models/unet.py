"""``dig2dig_unet`` on Triton's Python backend: the prior run by onnxruntime, for a server without the
onnxruntime backend (the ``tritonserver`` that ``nvidia-pytriton`` ships). Same name, inputs and outputs as
the ``onnxruntime`` and ``tensorrt`` variants; written into the repository as ``dig2dig_unet/1/model.py``
by ``dig2dig export triton``. The server's Python needs dig2dig and onnxruntime (docs/SERVING.md)."""
import json
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import triton_python_backend_utils as pb_utils

from dig2dig.export.triton import THREADS_PARAMETER
from dig2dig.runtime.backends.base import INPUT_T, INPUT_X, OUTPUT_Y
from dig2dig.runtime.backends.ort import OrtRunner

MODEL_FILE = "model.onnx"


class TritonPythonModel:
    """Runs each dynamic batch as one ``OrtRunner.denoise`` call per input size: the requests' images
    concatenated, the output split back (on the CPU onnxruntime runs them one by one, as locally)."""

    def initialize(self, args: Dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        threads = parameters.get(THREADS_PARAMETER, {}).get("string_value")
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILE)
        self.runner = OrtRunner(path, threads=int(threads) if threads else None)

    def execute(self, requests: List[Any]) -> List[Any]:
        xs = [pb_utils.get_input_tensor_by_name(r, INPUT_X).as_numpy() for r in requests]
        ts = [pb_utils.get_input_tensor_by_name(r, INPUT_T).as_numpy().reshape(-1) for r in requests]
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(x.shape[1:], []).append(i)
        responses: List[Any] = [None] * len(requests)
        for members in groups.values():
            try:
                y = self.runner.denoise(np.concatenate([xs[i] for i in members]),
                                        np.concatenate([ts[i] for i in members]))
            except Exception as exc:  # onnxruntime's own exception types: each request of the group gets it
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=error)
                continue
            ends = np.cumsum([len(xs[i]) for i in members])
            for i, part in zip(members, np.split(y, ends[:-1])):
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT_Y, np.ascontiguousarray(part))])
        return responses

    def finalize(self) -> None:
        self.runner.close()
