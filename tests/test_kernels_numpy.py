"""The NumPy twins' own behaviour: DIG weights on a real infrared/visible pair, the box filter, the RNG."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from conftest import em_iterations, pair
from dig2dig.kernels import rng
from dig2dig.kernels.cuda import EM_SOLVE_ITERATIONS, em_chebyshev_omegas
from dig2dig.kernels.dig import box_mean, dig_weights
from dig2dig.kernels.resample import enlarge, shrink


def real_sources(name: str = "22") -> np.ndarray:
    """(2, H, W) float32 infrared and visible TNO images in model space [-1, 1]."""
    return np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in pair("ivf", name)]
                    ).astype(np.float32) / 127.5 - 1


def noisy_tno_pair() -> tuple:
    """TNO 22 as DDFM's (I, V) = (visible, infrared), and a noisy f_pre between them: (f_pre, I, V)."""
    V, I = real_sources()  # noqa: E741
    f_pre = (0.5 * (I + V) + 0.1 * rng.gaussian(9, 0, I.shape)).astype(np.float32)
    return f_pre, I, V


def plausible_estimates(sources: np.ndarray) -> tuple:
    """Synthetic clean estimates: at t blurrier and noisier than at t', the same noise draw for both."""
    noise = rng.gaussian(7, 0, sources.shape)

    def blur(sigma: float) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in sources])

    return (blur(1.5) + 0.1 * noise).astype(np.float32), (blur(0.7) + 0.05 * noise).astype(np.float32)


def test_dig_weights_on_real_pair():
    sources = real_sources()
    x0_t, x0_next = plausible_estimates(sources)
    weights, gains = dig_weights(sources, x0_t, x0_next, window=7, tau=1.0)
    assert weights.shape == gains.shape == sources.shape
    assert weights.dtype == gains.dtype == np.float32
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    assert weights.min() > 0.0
    # Edges give a few near-one-hot pixels (1 - w below float32 resolution); they must stay rare.
    assert (weights >= 1.0).mean() < 0.01
    low, high = np.percentile(weights[0], [5, 95])
    assert high - low > 0.2, (low, high)
    assert weights[0].std() > 0.05


def test_dig_weights_are_scale_free():
    """Scaling every estimate's error by s scales the gains by s**2 and leaves the weights alone."""
    sources = real_sources()
    x0_t, x0_next = plausible_estimates(sources)
    weights, gains = dig_weights(sources, x0_t, x0_next, 5, 1.0)
    scaled = [(sources + 0.25 * (x0 - sources)).astype(np.float32) for x0 in (x0_t, x0_next)]
    weights_s, gains_s = dig_weights(sources, *scaled, 5, 1.0)
    np.testing.assert_allclose(gains_s, gains / 16, atol=1e-6 * np.abs(gains).max())
    np.testing.assert_allclose(weights_s, weights, atol=1e-5)


def test_dig_gains_window_one_is_the_loss_difference():
    sources, x0_t, x0_next = np.random.default_rng(0).uniform(-1, 1, (3, 2, 9, 11)).astype(np.float32)
    _, gains = dig_weights(sources, x0_t, x0_next, 1, 1.0)
    expected = (x0_t.astype(np.float64) - sources) ** 2 - (x0_next.astype(np.float64) - sources) ** 2
    np.testing.assert_allclose(gains, expected, rtol=1e-6, atol=1e-7)


def test_dig_absolute_temperature_is_the_plain_softmax():
    """relative=False: softmax of the raw gains over tau (tau = 1: Dig2DIG's formula as written)."""
    sources = real_sources()[:, :64, :64]
    x0_t, x0_next = plausible_estimates(sources)
    for tau in (1.0, 0.01):
        weights, gains = dig_weights(sources, x0_t, x0_next, 5, tau, relative=False)
        logits = gains.astype(np.float64) / tau
        expected = np.exp(logits) / np.exp(logits).sum(axis=0)
        np.testing.assert_allclose(weights, expected, atol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        dig_weights(sources, x0_t, x0_next, 5, 0.0, relative=False)


def test_dig_passes_repeat_the_box_mean():
    sources, x0_t, x0_next = np.random.default_rng(1).uniform(-1, 1, (3, 2, 19, 23)).astype(np.float32)
    _, gains = dig_weights(sources, x0_t, x0_next, 5, 1.0, passes=3)
    loss = (x0_t.astype(np.float64) - sources) ** 2 - (x0_next.astype(np.float64) - sources) ** 2
    np.testing.assert_allclose(gains, box_mean(box_mean(box_mean(loss, 5), 5), 5), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="passes"):
        dig_weights(sources, x0_t, x0_next, 5, 1.0, passes=0)


def test_dig_passes_remove_the_box_edges_on_real_pair():
    """At about the same spread (std 11.8, 11.8, 11.5 px), one 41-px box leaves window-sized plateaus
    whose edges are jumps of the weights between neighbours; a tent (2 passes) and a near-Gaussian
    (3 passes) of the same width do not."""
    sources = real_sources()
    x0_t, x0_next = plausible_estimates(sources)

    def largest_jump(window: int, passes: int) -> float:
        weights, _ = dig_weights(sources, x0_t, x0_next, window, 1.0, passes=passes)
        return max(float(np.abs(np.diff(weights[0], axis=axis)).max()) for axis in (0, 1))

    box, tent, gaussian = largest_jump(41, 1), largest_jump(29, 2), largest_jump(23, 3)
    assert box > 0.3 and tent < 0.1 and gaussian < 0.06, (box, tent, gaussian)


def test_dig_equal_gains_give_uniform_weights():
    sources = np.zeros((3, 8, 8), np.float32)
    weights, _ = dig_weights(sources, sources + 0.5, sources + 0.25, 3, 1.0)
    np.testing.assert_allclose(weights, 1 / 3, atol=1e-7)


@pytest.mark.parametrize("shape, window, tau_rel", [((5, 8, 8), 3, 1.0), ((2, 4, 9), 9, 1.0), ((2, 8), 3, 1.0),
                                                    ((2, 8, 8), 4, 1.0), ((2, 8, 8), 3, -1.0)])
def test_dig_rejects_bad_arguments(shape, window, tau_rel):
    zeros = np.zeros(shape, np.float32)
    with pytest.raises(ValueError):
        dig_weights(zeros, zeros, zeros, window, tau_rel)


def brute_box_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Loop reference: mean over the window with reflect-101 indices, in Python floats."""
    height, width = x.shape
    radius = window // 2

    def reflect(i: int, n: int) -> int:
        i = -i if i < 0 else i
        return 2 * n - 2 - i if i >= n else i

    out = np.zeros((height, width))
    for y in range(height):
        for x_ in range(width):
            out[y, x_] = sum(float(x[reflect(y + dy, height), reflect(x_ + dx, width)])
                             for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1))
    return out / window ** 2


@pytest.mark.parametrize("window", [1, 3, 5, 9])
def test_box_mean_matches_loop_and_opencv(window):
    x = np.random.default_rng(window).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(box_mean(x, window), brute_box_mean(x, window), atol=1e-12)
    blurred = cv2.blur(x, (window, window), borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(box_mean(x, window), blurred, atol=1e-6)


def splitmix_reference(seed: int, stream: int, index: int) -> float:
    """The rng docstring's algorithm with Python integers and the math module, one element."""
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = mix((mix((seed + golden) & mask) + stream) & mask)
    a = mix((key + (2 * index + 1) * golden) & mask)
    b = mix((key + (2 * index + 2) * golden) & mask)
    u1, u2 = ((a >> 11) + 1) * 2.0 ** -53, (b >> 11) * 2.0 ** -53
    return float(np.float32(math.sqrt(-2 * math.log(u1)) * math.cos(6.283185307179586 * u2)))


@pytest.mark.parametrize("seed, stream", [(0, 0), (1234, 5), (2 ** 64 - 1, 2 ** 63 + 11)])
def test_gaussian_follows_the_documented_algorithm(seed, stream):
    z = rng.gaussian(seed, stream, 1000)
    for index in (0, 1, 2, 517, 999):
        assert z[index] == splitmix_reference(seed, stream, index)


def test_gaussian_is_reproducible_and_indexed_by_flat_position():
    z = rng.gaussian(3, 1, (2, 5, 7))
    assert z.dtype == np.float32 and z.shape == (2, 5, 7) and z.flags.c_contiguous
    np.testing.assert_array_equal(z, rng.gaussian(3, 1, (2, 5, 7)))
    np.testing.assert_array_equal(z.ravel(), rng.gaussian(3, 1, 70))
    np.testing.assert_array_equal(z.ravel()[:20], rng.gaussian(3, 1, 20))
    assert not np.array_equal(z, rng.gaussian(4, 1, (2, 5, 7)))


def test_gaussian_is_standard_normal():
    z = rng.gaussian(11, 0, 1_000_000).astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1) < 5 * math.sqrt(0.5 / n)
    kurtosis = np.mean((z - z.mean()) ** 4) / z.var() ** 2
    assert abs(kurtosis - 3) < 5 * math.sqrt(24 / n)
    counts, _ = np.histogram(z, bins=[-np.inf, -2, -1, 0, 1, 2, np.inf])
    expected = n * np.array([0.02275, 0.13591, 0.34134, 0.34134, 0.13591, 0.02275])
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert np.isfinite(z).all() and np.abs(z).max() < 9


def test_gaussian_streams_and_seeds_are_independent():
    n = 200_000
    draws = [rng.gaussian(5, 0, n), rng.gaussian(5, 1, n), rng.gaussian(6, 0, n), rng.gaussian(5, 2, n)]
    corr = np.corrcoef(np.stack(draws))
    off_diagonal = corr[~np.eye(len(draws), dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / math.sqrt(n)
    z = draws[0].astype(np.float64)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / math.sqrt(n)


def test_gaussian_rejects_out_of_range_seeds():
    with pytest.raises(ValueError):
        rng.gaussian(-1, 0, 4)
    with pytest.raises(ValueError):
        rng.gaussian(0, 2 ** 64, 4)


def chebyshev_solve(rhs: np.ndarray) -> np.ndarray:
    """em.cu's TV proximal solve in float32 NumPy: the same omegas, circular 5-point stencil, zero start."""
    prev = cur = np.zeros_like(rhs)
    for omega in em_chebyshev_omegas():
        neighbours = (np.roll(cur, 1, 0) + np.roll(cur, -1, 0)) + (np.roll(cur, 1, 1) + np.roll(cur, -1, 1))
        residual = rhs - (np.float32(5) * cur - neighbours)
        cur, prev = np.float32(omega) * (cur - prev + residual / np.float32(5)) + prev, cur
    return cur


def test_gpu_em_iterative_solve_matches_ddfm_fft_solve(em_ref):
    """The GPU EM replaces DDFM's FFT solve for H by Chebyshev iterations on the same circular operator."""
    f_pre, I, V = (em_ref[key][0, 0] for key in ("f_pre", "I", "V"))  # noqa: E741
    F1 = F2 = np.zeros_like(I)
    for k in range(em_iterations(em_ref)):
        Y, X = I - V, f_pre - V
        rhs = (Y - X) + (np.roll(F1, 1, 1) - F1) + (np.roll(F2, 1, 0) - F2)  # + K1^T F1 + K2^T F2
        H = chebyshev_solve(rhs.astype(np.float32))
        expected = em_ref[f"H_f64_iter{k}"][0, 0]
        assert np.abs(H - expected).max() <= 5e-6 * np.abs(expected).max(), k
        F1, F2 = (em_ref[f"{name}_f64_iter{k}"][0, 0].astype(np.float32) for name in ("F1", "F2"))
    assert len(em_chebyshev_omegas()) == EM_SOLVE_ITERATIONS


def test_shrink_is_the_area_mean_then_reflect_padding():
    image = cv2.imread(str(pair("ivf", "22")[0]), cv2.IMREAD_GRAYSCALE).astype(np.float32)[:96, :120] / 255
    planes = np.stack([image, 1 - image])
    small = shrink(planes, 4, (32, 40))
    assert small.shape == (2, 32, 40) and small.dtype == np.float32
    area = cv2.resize(image, (30, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(small[0, :24, :30], area, atol=1e-6)
    np.testing.assert_allclose(small[:, 24:, :30], small[:, 22:14:-1, :30])  # reflect-101 below
    np.testing.assert_allclose(small[:, :24, 30:], small[:, :24, 28:18:-1])  # and to the right


def test_enlarge_is_bilinear_with_half_pixel_centres():
    rng = np.random.default_rng(3)
    small = rng.random((2, 7, 9)).astype(np.float32)
    big = enlarge(small, 4, (24, 32))  # the top-left 6 x 8 of each plane, 4 times larger
    assert big.shape == (2, 24, 32) and big.dtype == np.float32

    def source(i: int, n: int) -> float:
        return min(max((i + 0.5) / 4 - 0.5, 0.0), n - 1)

    for k, y, x in [(0, 0, 0), (1, 5, 17), (0, 23, 31), (1, 12, 2)]:
        sy, sx = source(y, 6), source(x, 8)
        y0, x0 = int(sy), int(sx)
        y1, x1 = min(y0 + 1, 5), min(x0 + 1, 7)
        ay, ax = sy - y0, sx - x0
        plane = small[k]
        want = ((1 - ay) * ((1 - ax) * plane[y0, x0] + ax * plane[y0, x1])
                + ay * ((1 - ax) * plane[y1, x0] + ax * plane[y1, x1]))
        assert abs(big[k, y, x] - want) < 1e-6
    np.testing.assert_allclose(enlarge(np.ones((1, 4, 4), np.float32), 2, (8, 8)), 1.0)
