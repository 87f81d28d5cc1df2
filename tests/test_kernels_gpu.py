"""Each CUDA kernel against its NumPy twin, on random and real inputs (needs pycuda and a CUDA device).

Outputs are poisoned with NaN before every launch, so a missed element fails the comparison.
Thresholds (the expected errors come from float32 NumPy emulations of the kernels' arithmetic):
- step (predict_x0, ddim_update, q_sample): bit-identical (same float32 operations, no FMA);
- colour: max abs error <= 1e-6 (the twin's matrix product goes through BLAS, in another order);
- gaussian: max |gpu - numpy| <= 1e-6 (one float32 ulp at |z| < 8; double maths on both sides),
  and at least 99.99 % of elements bit-identical;
- dig gains: max abs error <= 2e-6 * max |gains| (float32 window sums of up to 15 x 15 terms,
  about 2e-7 expected; 4e-7 with 3 passes of 41 px); dig weights: max abs error <= 2e-5, sums
  within 2e-6 of 1;
- EM (Chebyshev solve for H instead of the FFT, about 1.5e-6 relative on H): F max abs error
  <= 5e-6 (about 4e-7 expected), tau_a and tau_b relative <= 2e-6, F1 and F2 <= 1e-5 of their
  maximum (about 2e-6 expected); with an E-step window, F max abs error <= 2e-5 (float32 sums of
  the window's logs, about 1e-6 relative on C and D, against NumPy's float64 means).
"""
from __future__ import annotations

import numpy as np
import pytest

from dig2dig.kernels import color, dig, em, resample, rng, step
from dig2dig.kernels.cuda import CudaKernels
from test_kernels_numpy import noisy_tno_pair, plausible_estimates, real_sources

pytestmark = pytest.mark.gpu
pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
gpuarray = pytest.importorskip("pycuda.gpuarray", reason="pycuda is not installed")


@pytest.fixture(scope="module")
def kernels(cuda_device):  # type: ignore[no-untyped-def]
    ops = CudaKernels(0)
    yield ops
    ops.close()


def poisoned(shape) -> gpuarray.GPUArray:
    return gpuarray.to_gpu(np.full(shape, np.nan, np.float32))


def to_gpu(array: np.ndarray) -> gpuarray.GPUArray:
    return gpuarray.to_gpu(np.ascontiguousarray(array, np.float32))


def run_dig(kernels: CudaKernels, sources, x0_t, x0_next, window: int, tau_rel: float, relative: bool = True,
            passes: int = 1):
    inputs = [to_gpu(a) for a in (sources, x0_t, x0_next)]
    weights, gains = poisoned(sources.shape), poisoned(sources.shape)
    kernels.dig_weights(*inputs, window, tau_rel, weights, gains, relative, passes)
    kernels.synchronize()
    return weights.get(), gains.get()


def compare_dig(kernels: CudaKernels, sources, x0_t, x0_next, window: int, tau_rel: float,
                relative: bool = True, passes: int = 1) -> None:
    weights, gains = run_dig(kernels, sources, x0_t, x0_next, window, tau_rel, relative, passes)
    ref_weights, ref_gains = dig.dig_weights(sources, x0_t, x0_next, window, tau_rel, relative, passes)
    assert np.isfinite(weights).all() and np.isfinite(gains).all(), "unwritten (NaN) outputs"
    gain_err = np.abs(gains - ref_gains).max() / max(np.abs(ref_gains).max(), 1e-30)
    weight_err = np.abs(weights - ref_weights).max()
    print(f"dig {sources.shape} window {window} x {passes}: gains rel err {gain_err:.2e}, "
          f"weights abs err {weight_err:.2e}")
    assert gain_err <= 2e-6
    assert weight_err <= 2e-5
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=2e-6)


@pytest.mark.parametrize("shape, window", [((2, 37, 53), 1), ((2, 37, 53), 7), ((3, 64, 129), 15),
                                           ((4, 300, 257), 5), ((2, 5, 200), 9), ((1, 16, 16), 3)])
def test_dig_random(kernels, shape, window):
    generator = np.random.default_rng(sum(shape) + window)
    sources = generator.uniform(-1, 1, shape).astype(np.float32)
    x0_t = (sources + generator.normal(0, 0.3, shape)).astype(np.float32)
    x0_next = (sources + generator.normal(0, 0.1, shape)).astype(np.float32)
    compare_dig(kernels, sources, x0_t, x0_next, window, 1.0)


@pytest.mark.parametrize("window, tau_rel, relative", [(7, 1.0, True), (15, 0.5, True), (1, 1.0, True),
                                                      (21, 1.0, False), (21, 0.01, False)])
def test_dig_real(kernels, window, tau_rel, relative):
    sources = real_sources()
    compare_dig(kernels, sources, *plausible_estimates(sources), window, tau_rel, relative)


@pytest.mark.parametrize("window, passes", [(7, 2), (23, 3), (41, 3)])
def test_dig_real_passes(kernels, window, passes):
    sources = real_sources()
    compare_dig(kernels, sources, *plausible_estimates(sources), window, 1.0, True, passes)


def test_dig_is_deterministic_across_launches_and_sizes(kernels):
    """The last-block reduction resets its counter, and grown work buffers still give the same bits."""
    sources = real_sources()
    x0_t, x0_next = plausible_estimates(sources)
    first = run_dig(kernels, sources, x0_t, x0_next, 7, 1.0)
    small = sources[:, :40, :50]
    run_dig(kernels, small, x0_t[:, :40, :50], x0_next[:, :40, :50], 3, 1.0)
    second = run_dig(kernels, sources, x0_t, x0_next, 7, 1.0)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed, stream, shape", [(0, 0, (1,)), (1, 2, (1000003,)), (42, 7, (3, 576, 768)),
                                                 (2 ** 64 - 1, 2 ** 63, (2, 33, 65))])
def test_gaussian(kernels, seed, stream, shape):
    out = poisoned(shape)
    kernels.gaussian(seed, stream, out)
    kernels.synchronize()
    z = out.get()
    ref = rng.gaussian(seed, stream, shape)
    assert np.isfinite(z).all(), "unwritten (NaN) outputs"
    diff = np.abs(z - ref)
    print(f"gaussian {shape}: max abs diff {diff.max():.2e}, {np.count_nonzero(diff)} of {diff.size} differ")
    assert diff.max() <= 1e-6
    assert np.count_nonzero(diff) <= max(1, diff.size // 10000)


def run(kernels: CudaKernels, method: str, inputs: list, shape: tuple, *args) -> np.ndarray:
    """Launch ``kernels.<method>(*device inputs, *args, out)`` into a poisoned output; return it on the host."""
    out = poisoned(shape)
    getattr(kernels, method)(*[to_gpu(a) for a in inputs], *args, out)
    kernels.synchronize()
    result = out.get()
    assert not np.isnan(result).any(), f"{method}: unwritten (NaN) outputs"
    return result


@pytest.mark.parametrize("shape", [(3, 37, 53), (1, 256, 256), (5, 3, 64, 64)])
@pytest.mark.parametrize("abar, abar_prev", [(0.02, 0.1), (0.5, 0.7), (0.999, 0.9999)])
def test_step_is_bit_identical(kernels, shape, abar, abar_prev):
    generator = np.random.default_rng(len(shape))
    x, eps = generator.normal(size=(2,) + shape).astype(np.float32)
    for clip in (True, False):
        gpu = run(kernels, "predict_x0", [x, eps], shape, abar, clip)
        np.testing.assert_array_equal(gpu, step.predict_x0(x, eps, abar, clip))
    x0 = step.predict_x0(x, eps, abar)
    np.testing.assert_array_equal(run(kernels, "ddim_update", [x, x0], shape, abar, abar_prev),
                                  step.ddim_update(x, x0, abar, abar_prev))
    np.testing.assert_array_equal(run(kernels, "q_sample", [x0, eps], shape, abar), step.q_sample(x0, eps, abar))
    noise = eps.reshape(-1)[: int(np.prod(shape[1:]))].reshape(shape[1:])  # one draw for every leading index
    np.testing.assert_array_equal(run(kernels, "q_sample", [x0, noise], shape, abar), step.q_sample(x0, noise, abar))


def test_color_real_and_random(kernels):
    generator = np.random.default_rng(3)
    images = [generator.uniform(-1, 1, (3, 45, 67)).astype(np.float32)]
    sources = real_sources()
    images.append(np.stack([sources[1], sources[0], 0.5 * (sources[0] + sources[1])]))
    for rgb in images:
        ycc = run(kernels, "rgb_to_ycbcr", [rgb], rgb.shape)
        assert np.abs(ycc - color.rgb_to_ycbcr(rgb)).max() <= 1e-6
        back = run(kernels, "ycbcr_to_rgb", [ycc], rgb.shape)
        assert np.abs(back - color.ycbcr_to_rgb(ycc)).max() <= 1e-6


@pytest.mark.parametrize("factor, shape, small", [(2, (2, 128, 192), (64, 96)), (4, (2, 136, 200), (40, 56)),
                                                 (8, (1, 64, 64), (8, 8))])
def test_resample_real_and_random(kernels, factor, shape, small):
    """shrink (block means, reflect-101 padding) and enlarge (bilinear) against their NumPy twins."""
    generator = np.random.default_rng(factor)
    planes = generator.uniform(-1, 1, shape).astype(np.float32)
    if shape[0] == 2 and factor == 2:
        planes = real_sources()[:, :128, :192]
    shrunk = run(kernels, "shrink", [planes], (shape[0],) + small, factor)
    assert np.abs(shrunk - resample.shrink(planes, factor, small)).max() <= 1e-6
    grown = run(kernels, "enlarge", [shrunk], shape, factor)
    assert np.abs(grown - resample.enlarge(shrunk, factor, shape[1:])).max() <= 1e-6


def compare_em(kernels: CudaKernels, f_pre, a, b, steps: int, weights=None, window: int = 1,
               power: float = 1.0) -> None:
    """``steps`` EM steps on the GPU and in NumPy from the same start, compared after each step."""
    state, gpu_state = em.em_init(a.shape, np.float32), kernels.em_init(a.shape)
    device = [to_gpu(x) for x in (f_pre, a, b)]
    device_weights = [None, None] if weights is None else [to_gpu(w) for w in weights]
    for k in range(steps):
        F, state = em.em_step(f_pre, a, b, state, 0.5, 0.001, *(weights or (None, None)), window, power)
        out = poisoned(a.shape)
        kernels.em_step(*device, gpu_state, 0.5, 0.001, *device_weights, out, window, power)
        kernels.synchronize()
        gpu_F = out.get()
        tau_a, tau_b = gpu_state.tau()
        errors = {"F": np.abs(gpu_F - F).max(),
                  "tau_a": abs(tau_a - state.tau_a) / state.tau_a, "tau_b": abs(tau_b - state.tau_b) / state.tau_b,
                  "F1": np.abs(gpu_state.F1.get() - state.F1).max() / np.abs(state.F1).max(),
                  "F2": np.abs(gpu_state.F2.get() - state.F2).max() / np.abs(state.F2).max()}
        listed = ", ".join(f"{key} {value:.2e}" for key, value in errors.items())
        print(f"em {a.shape} window {window} power {power:g} step {k}: {listed}")
        assert not np.isnan(gpu_F).any(), "unwritten (NaN) outputs"
        assert errors["F"] <= (5e-6 if window == 1 else 2e-5) and errors["tau_a"] <= 2e-6 and errors["tau_b"] <= 2e-6
        assert errors["F1"] <= 1e-5 and errors["F2"] <= 1e-5


def test_em_ddfm_reference(kernels, em_ref):
    compare_em(kernels, *(em_ref[key][0, 0] for key in ("f_pre", "V", "I")), steps=5)  # A = V, B = I


def test_em_real_weighted(kernels):
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    sources = np.stack([V, I])  # real_sources(): infrared, visible
    weights, _ = dig.dig_weights(sources, *plausible_estimates(sources), 9, 1.0)
    compare_em(kernels, f_pre, V, I, steps=3, weights=(weights[0], weights[1]))
    compare_em(kernels, f_pre[:100, :130], V[:100, :130], I[:100, :130], steps=2)


def test_em_real_windowed(kernels):
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    sources = np.stack([V, I])  # real_sources(): infrared, visible
    weights, _ = dig.dig_weights(sources, *plausible_estimates(sources), 9, 1.0)
    compare_em(kernels, f_pre, V, I, steps=3, weights=(weights[0], weights[1]), window=5)
    compare_em(kernels, f_pre[:7, :130], V[:7, :130], I[:7, :130], steps=2, window=13)  # radius 6 < 7 rows


@pytest.mark.parametrize("power", [0.5, 0.0])
def test_em_real_power(kernels, power):
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    sources = np.stack([V, I])  # real_sources(): infrared, visible
    weights, _ = dig.dig_weights(sources, *plausible_estimates(sources), 9, 1.0)
    compare_em(kernels, f_pre, V, I, steps=3, weights=(weights[0], weights[1]), window=9, power=power)
