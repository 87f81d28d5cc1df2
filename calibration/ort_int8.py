"""INT8 model for onnxruntime: static QDQ quantization of the UNet's convolutions.

The convolutions get per-channel INT8 weights and UINT8 activations (onnxruntime's U8S8, the fast
path of its x86 and Arm kernels), with the activation ranges calibrated on the inputs the sampler
gives the model: noised luminance crops at timesteps spread over the whole schedule
(:func:`dig2dig.calibration.int8.noised_batches`, the same reader as TensorRT's calibrator), taken at
a high percentile of each histogram so that a few outliers do not stretch the range. Everything else
stays float: the first and the last convolution (the image's own values, and the epsilon every
step divides by sqrt(abar)), GroupNorm, SiLU, the residual sums and the attention (docs/BENCHMARKS.md,
INT8).

The file is the FP32 model's graph with QuantizeLinear/DequantizeLinear pairs around each quantized
convolution and ``precision`` "int8" in its metadata; onnxruntime runs it through the normal runner
(``dig2dig export trt`` refuses it: TensorRT engines are built from the FP32 or FP16 export).
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from ..runtime.atomic import atomic_replace
from ..runtime.backends.base import INPUT_T, INPUT_X, OUTPUT_Y, ModelInfo
from ..runtime.errors import ModelError
from ..runtime.schedule import alphas_cumprod
from .int8 import calibration_images, luma_crop, noised_batches

DEFAULT_BATCHES = 32  # calibration images, one per batch: 32 strata of ~31 timesteps
DEFAULT_CROP = 256  # side of the square calibration crops (px)
PERCENTILE = 99.999  # of each activation's histogram, the calibrated range
CHECK_TIMESTEPS = (999, 500, 100, 10)  # where the written model is compared with the FP32 one


@dataclass(frozen=True)
class QuantReport:
    """What ``quantize_int8`` wrote: the file, what it quantized and how far it moved from FP32."""

    path: Path
    quantized: int  # convolutions in INT8
    kept: Tuple[str, ...]  # convolutions kept in float
    batches: int
    crop: int
    x0_psnr: Tuple[Tuple[int, float], ...]  # (t, PSNR in dB of the INT8 x0 estimate against FP32's)

    def summary(self) -> str:
        """Human-readable lines: the file, the calibration, then the check per t."""
        lines = [f"wrote {self.path} (int8 QDQ: {self.quantized} convolutions in INT8, {len(self.kept)} kept in float)",
                 f"calibrated on {self.batches} noised {self.crop}x{self.crop} crops, percentile {PERCENTILE:g}"]
        lines += [f"x0 estimate at t={t}: PSNR {psnr:.1f} dB against the FP32 model" for t, psnr in self.x0_psnr]
        return "\n".join(lines)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hold back onnxruntime's quantizer chatter (it prints its histogram settings and logs advice)."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _metadata(model: Any) -> Dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def quantize_int8(onnx_path: Union[str, Path], out_path: Union[str, Path], calib_dir: Union[str, Path],
                  batches: int = DEFAULT_BATCHES, crop: int = DEFAULT_CROP, seed: int = 0) -> QuantReport:
    """Write the INT8 QDQ version of the FP32 dig2dig model ``onnx_path`` to ``out_path`` (atomically).

    Calibrates on ``batches`` crops of ``crop`` px from the images under ``calib_dir`` (any folder of
    images; the prior's training images are the natural choice). Bad input raises before any work.
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError as exc:
        raise ModelError(f"'dig2dig export int8' needs onnx and onnxruntime: pip install 'dig2dig[export]' "
                         f"({exc})") from exc
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: model file not found")
    if batches < 1 or crop < 8:
        raise ModelError(f"{onnx_path}: calibration needs at least 1 batch and crops of at least 8 px")
    model = onnx.load(str(onnx_path))
    info = ModelInfo.from_metadata(_metadata(model), str(onnx_path))
    if info.precision != "fp32":
        raise ModelError(f"{onnx_path}: INT8 quantization starts from the FP32 export, this one is {info.precision}")
    images = calibration_images(str(calib_dir))
    crop = info.multiple * max(1, crop // info.multiple)
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    if len(convs) < 3:
        raise ModelError(f"{onnx_path}: expected a UNet with convolutions, found {len(convs)}")
    kept = (convs[0], convs[-1])

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = noised_batches(images, (1, info.in_channels, crop, crop), info.schedule, batches, seed)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_X: batch[0], INPUT_T: batch[1]}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(out_path) as (staged,), _quiet():
        quantize_static(str(onnx_path), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=list(kept),
                        calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": PERCENTILE})
        quantized = onnx.load(str(staged))
        meta = _metadata(quantized)
        meta.update(replace(info, precision="int8").to_metadata())
        onnx.helper.set_model_props(quantized, meta)
        onnx.save_model(quantized, str(staged))
        onnx.checker.check_model(str(staged))
        x0_psnr = _compare(onnx_path, staged, info, images, crop, seed)
    return QuantReport(out_path, len(convs) - len(kept), kept, batches, crop, x0_psnr)


def _compare(fp32: Path, int8: Path, info: ModelInfo, images: Sequence[str], crop: int,
             seed: int) -> Tuple[Tuple[int, float], ...]:
    """PSNR (peak-to-peak 2) of the INT8 model's x0 estimate against the FP32 model's, on one calibration
    crop noised to each of ``CHECK_TIMESTEPS``; ``ModelError`` if the INT8 output is not finite."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    rng = np.random.default_rng(seed + 1)
    clean = np.repeat(luma_crop(images[int(rng.integers(len(images)))], crop, crop, rng)[None, None],
                      len(CHECK_TIMESTEPS), axis=0).repeat(info.in_channels, axis=1)
    a = alphas_cumprod(info.schedule)[list(CHECK_TIMESTEPS)][:, None, None, None]
    x_t = (np.sqrt(a) * clean + np.sqrt(1 - a) * rng.standard_normal(clean.shape)).astype(np.float32)
    t = np.array(CHECK_TIMESTEPS, dtype=np.float32)
    x0 = [np.clip((x_t - np.sqrt(1 - a) * s.run([OUTPUT_Y], {INPUT_X: x_t, INPUT_T: t})[0][:, :info.in_channels])
                  / np.sqrt(a), -1, 1) for s in sessions]
    if not np.all(np.isfinite(x0[1])):
        raise ModelError(f"{int8.name}: the INT8 model returned NaN/Inf; file not written")
    mse = np.mean((x0[1] - x0[0]) ** 2, axis=(1, 2, 3))
    return tuple((step, float(10 * np.log10(4.0 / max(float(m), 1e-20)))) for step, m in zip(CHECK_TIMESTEPS, mse))
