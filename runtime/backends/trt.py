"""TensorRT runner: runs a dig2dig plan (``dig2dig export trt``) on the GPU.

Uses only TensorRT's name-based API, which exists unchanged from 8.5 (JetPack 5) to 10.x:
``num_io_tensors`` / ``get_tensor_name`` / ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``. Device memory and the stream come from pycuda on the device's *primary*
context (``kernels/device.py``), the one the CUDA runtime (and so TensorRT) uses, so buffers from
the CUDA kernels (``kernels/cuda.py``, same context) can be handed to the engine directly.

tensorrt and pycuda are imported when a runner is created, never when this module is imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from ...kernels.device import CudaError, DeviceOwner, PrimaryContext, check_array
from ..errors import InputError, ModelError
from .base import FLOAT32, INPUT_T, INPUT_X, OUTPUT_Y, ModelInfo, Runner, TensorSpec, check_io
from .plan_file import Profile, check_device, check_tensorrt_version, read_plan

if TYPE_CHECKING:
    import tensorrt as trt

NO_TENSORRT = ("the TensorRT backend needs TensorRT's Python package (JetPack ships it for the system "
               "Python; elsewhere: pip install tensorrt)")

Shape4 = Tuple[int, int, int, int]


def check_tensorrt() -> None:
    """Raise ``ModelError`` with the fix unless TensorRT's Python package is importable."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ModelError(f"{NO_TENSORRT} ({exc})") from exc
    if not hasattr(tensorrt, "Runtime"):  # tensorrt-stubs alone leaves an empty namespace package
        raise ModelError(f"{NO_TENSORRT} (only its type stubs are installed)")


def primary_context(device: int, source: str) -> PrimaryContext:
    """Device ``device``'s primary context, pushed; ``ModelError`` naming ``source`` without pycuda or the device."""
    try:
        return PrimaryContext(device)
    except CudaError as exc:
        raise ModelError(f"{source}: {exc}") from exc


class TrtRunner(DeviceOwner, Runner):
    """Runs a dig2dig TensorRT plan; one engine, one execution context per optimisation profile,
    buffers reused across calls.

    A call runs on the context of the first profile holding its shape. A context keeps its input
    shape until a call of another shape reaches it, so a plan with one profile per batch size
    (``dig2dig export trt --batches 1,5``) runs the loop's step and DIG batches without ever
    changing a shape, which is what capturing the loop in a CUDA graph needs (``runtime/graph.py``).
    Every context holds its own activation memory (TensorRT cannot know they never run at once).

    ``denoise(x, t)`` takes host arrays (copies up, runs, copies down). ``denoise_device(x, t, y)``
    takes pycuda GPUArrays and only enqueues the engine on the stream: nothing leaves the GPU.
    """

    on_device = True

    def __init__(self, path: str, device: int = 0, stream: Any = None) -> None:
        check_tensorrt()
        import tensorrt as trt

        header, engine_bytes = read_plan(path)
        check_tensorrt_version(header, path, trt.__version__)
        self.info: ModelInfo = ModelInfo.from_metadata(header.metadata, path)
        self.path = path
        self.precision = header.precision
        self.profiles: Tuple[Profile, ...] = header.profiles  # in the order the builder was given them
        self.open_device(primary_context(device, path), stream)
        try:
            check_device(header, path, self.context.compute_capability())
            self._logger = trt.Logger(trt.Logger.WARNING)
            # Engines built by TensorRT 8.5/8.6 hold the InstanceNormalization_TRT plugin (the ONNX
            # parser's GroupNorm route there); deserializing them needs the plugin library registered.
            trt.init_libnvinfer_plugins(self._logger, "")
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if engine is None:
                raise ModelError(f"{path}: TensorRT {trt.__version__} could not deserialize the engine "
                                 "(see its log above); rebuild it with 'dig2dig export trt'")
            self._engine = engine
            self._check_io()
            self._contexts = [self._create_context(index) for index in range(len(self.profiles))]
            self.stream.synchronize()
        except BaseException:
            self.close()
            raise
        self._shapes: Dict[int, Shape4] = {}  # the input shape each context is set to

    def _check_io(self) -> None:
        """The declared float32 tensors ``x``, ``t`` and ``y`` (``check_io``), and the header's profiles."""
        import tensorrt as trt

        engine = self._engine
        specs: Dict[bool, Dict[str, TensorSpec]] = {True: {}, False: {}}  # by "is an input"
        for name in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors)):
            dtype, dims = engine.get_tensor_dtype(name), engine.get_tensor_shape(name)
            specs[engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT][name] = (
                FLOAT32 if dtype == trt.float32 else dtype.name,
                tuple(None if dims[i] < 0 else int(dims[i]) for i in range(len(dims))))
        check_io(specs[True], specs[False], self.info, self.path)
        if engine.num_optimization_profiles != len(self.profiles):
            raise ModelError(f"{self.path}: engine has {engine.num_optimization_profiles} optimisation profiles, "
                             f"the plan header lists {len(self.profiles)}")

    def _create_context(self, index: int) -> "trt.IExecutionContext":
        """An execution context bound to profile ``index`` (contexts of one engine cannot share one)."""
        context = self._engine.create_execution_context()
        if context is None:
            raise ModelError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        if not context.set_optimization_profile_async(index, self.stream.handle):
            raise ModelError(f"{self.path}: TensorRT refused optimisation profile {index}")
        return context

    def output_shape(self, shape: Shape4) -> Shape4:
        """Shape of ``y`` for an input ``x`` of ``shape``."""
        return shape[0], self.info.out_channels, shape[2], shape[3]

    def _prepare(self, shape: Shape4) -> "trt.IExecutionContext":
        """The context of the first profile holding ``shape``, its input shapes set to it."""
        if self.closed:
            raise ModelError(f"{self.path}: the TensorRT runner is closed")
        n, channels, height, width = shape
        if channels != self.info.in_channels:
            raise InputError(f"{self.path}: model takes {self.info.in_channels} channel(s), got {channels}")
        multiple = self.info.multiple
        if height % multiple or width % multiple:
            raise InputError(f"{self.path}: height and width must be multiples of {multiple}, got {height}x{width}")
        index = next((i for i, p in enumerate(self.profiles) if p.contains(n, height, width)), None)
        if index is None:
            ranges = "; ".join(p.describe() for p in self.profiles)
            raise InputError(f"{self.path}: input {height}x{width},{n} (HxW,N) is outside the engine's "
                             f"profile ({ranges}); rebuild the plan with a larger --max "
                             "('dig2dig export trt') or use smaller images")
        context = self._contexts[index]
        if self._shapes.get(index) == shape:
            return context
        if not (context.set_input_shape(INPUT_X, shape) and context.set_input_shape(INPUT_T, (n,))):
            raise ModelError(f"{self.path}: TensorRT refused input shape {shape}")
        dims = context.get_tensor_shape(OUTPUT_Y)
        out = tuple(int(dims[i]) for i in range(len(dims)))
        if out != self.output_shape(shape):
            raise ModelError(f"{self.path}: engine output shape {out}, the metadata implies {self.output_shape(shape)}")
        self._shapes[index] = shape
        return context

    def _enqueue(self, context: "trt.IExecutionContext", x_ptr: int, t_ptr: int, y_ptr: int,
                 stream_handle: int) -> None:
        for name, pointer in ((INPUT_X, x_ptr), (INPUT_T, t_ptr), (OUTPUT_Y, y_ptr)):
            context.set_tensor_address(name, pointer)
        if not context.execute_async_v3(stream_handle):
            raise ModelError(f"{self.path}: TensorRT failed to run the engine (see its log above)")

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Raw model output for host arrays: copy up, run on :attr:`stream`, wait, copy down."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = np.ascontiguousarray(t, dtype=np.float32)
        if x.ndim != 4 or t.shape != (x.shape[0],):
            raise InputError(f"expected x [N, C, H, W] and t [N], got {x.shape} and {t.shape}")
        n, channels, height, width = (int(v) for v in x.shape)
        shape = (n, channels, height, width)
        context = self._prepare(shape)
        y = np.empty(self.output_shape(shape), dtype=np.float32)
        x_dev, t_dev, y_dev = (self.buffers.get(k, a.nbytes) for k, a in ((INPUT_X, x), (INPUT_T, t), (OUTPUT_Y, y)))
        # Synchronous copies run on the legacy default stream, which orders them with the
        # (blocking) pycuda stream the engine runs on.
        self.driver.memcpy_htod(x_dev, x)
        self.driver.memcpy_htod(t_dev, t)
        self._enqueue(context, int(x_dev), int(t_dev), int(y_dev), self.stream.handle)
        self.stream.synchronize()
        self.driver.memcpy_dtoh(y, y_dev)
        return y

    def denoise_device(self, x: Any, t: Any, y: Any, stream_handle: Optional[int] = None) -> None:
        """Enqueue the engine on pycuda GPUArrays (``Runner.denoise_device``; default stream :attr:`stream`)."""
        if len(x.shape) != 4:
            raise InputError(f"x: expected [N, C, H, W], got {tuple(x.shape)}")
        n, channels, height, width = (int(v) for v in x.shape)
        handle = self.stream.handle if stream_handle is None else int(stream_handle)
        shape = (n, channels, height, width)
        context = self._prepare(shape)
        check_array(INPUT_X, x, shape, InputError)
        check_array(INPUT_T, t, (n,), InputError)
        check_array(OUTPUT_Y, y, self.output_shape(shape), InputError)
        self._enqueue(context, int(x.gpudata), int(t.gpudata), int(y.gpudata), handle)

    def release(self) -> None:
        """Release the TensorRT objects, dependants first (``close`` frees the buffers and pops the context)."""
        for name in ("_contexts", "_engine", "_runtime"):
            if hasattr(self, name):
                delattr(self, name)
