"""Step arithmetic and DDFM's colour route, and the whole DDFM loop without the UNet.

The loop test feeds the stored per-step x_t and UNet output of DDFM's own sampler
(tests/data/reference/ddfm_sampler, respacing 10) through
predict_x0 -> rgb_to_ycbcr -> em_step -> ycbcr_to_rgb -> ddim_update, one EMState over all steps.
"""
from __future__ import annotations


import numpy as np
import pytest

from dig2dig.kernels.color import rgb_to_ycbcr, ycbcr_to_rgb
from dig2dig.kernels.em import em_init, em_step
from dig2dig.kernels.step import ddim_update, predict_x0, q_sample
from dig2dig.runtime.schedule import ADM_LINEAR, Schedule


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ddfm_loop_per_step(sampler_ref, dtype):
    schedule = Schedule.create(10, ADM_LINEAR)
    # DDFM's data flow: I = the visible image, V = the infrared one.
    I, V = sampler_ref["I"][0, 0].astype(dtype), sampler_ref["V"][0, 0].astype(dtype)
    state = em_init(I.shape, dtype)
    # Each step's output is the next step's input; the last one is the final sample.
    outputs = [*sampler_ref["r10_x_t"][1:, 0], sampler_ref["r10_final_sample"][0]]
    for i in range(len(schedule)):
        abar, abar_prev = schedule.alphas_cumprod[i], schedule.alphas_cumprod_prev[i]
        x = sampler_ref["r10_x_t"][i, 0].astype(dtype)
        eps = sampler_ref["r10_eps"][i, 0].astype(dtype)

        x0 = predict_x0(x, eps, abar)
        np.testing.assert_allclose(x0, sampler_ref["r10_pred_xstart_clipped"][i, 0], rtol=0, atol=1e-5)
        ycc = rgb_to_ycbcr(x0)
        np.testing.assert_allclose(ycc[0], sampler_ref["r10_em_f_pre"][i, 0, 0], rtol=0, atol=1e-5)
        ycc[0], state = em_step(ycc[0], V, I, state, lamb=0.5, rho=0.001)  # A = V, B = I
        np.testing.assert_allclose(ycc[0], sampler_ref["r10_em_F"][i, 0, 0], rtol=0, atol=1e-5)
        assert float(state.tau_a) == pytest.approx(sampler_ref["r10_tau_a"][i], rel=1e-6)
        assert float(state.tau_b) == pytest.approx(sampler_ref["r10_tau_b"][i], rel=1e-6)
        x0 = ycbcr_to_rgb(ycc)
        np.testing.assert_allclose(x0, sampler_ref["r10_pred_xstart_final"][i, 0], rtol=0, atol=1e-5)
        x_prev = ddim_update(x, x0, abar, abar_prev)
        assert x_prev.dtype == dtype
        np.testing.assert_allclose(x_prev, outputs[i], rtol=0, atol=1e-5)


def test_float32_x0_and_luminance_are_bit_exact(sampler_ref):
    schedule = Schedule.create(10, ADM_LINEAR)
    for i in range(len(schedule)):
        x0 = predict_x0(sampler_ref["r10_x_t"][i, 0], sampler_ref["r10_eps"][i, 0],
                        schedule.alphas_cumprod[i])
        np.testing.assert_array_equal(x0, sampler_ref["r10_pred_xstart_clipped"][i, 0])
        np.testing.assert_array_equal(rgb_to_ycbcr(x0)[0], sampler_ref["r10_em_f_pre"][i, 0, 0])


def test_colour_route_is_skimage_on_minus_one_to_one():
    rgb2ycbcr = pytest.importorskip("skimage.color").rgb2ycbcr
    x = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    expected = rgb2ycbcr(x.transpose(1, 2, 0)).transpose(2, 0, 1) / 255
    ycc = rgb_to_ycbcr(x)
    assert ycc.dtype == np.float32
    np.testing.assert_allclose(ycc, expected, rtol=0, atol=1e-6)
    assert ycc[0].mean() == pytest.approx((16 / 255 + (65.481 * x[0] + 128.553 * x[1] + 24.966 * x[2]) / 255).mean())
    np.testing.assert_allclose(ycbcr_to_rgb(ycc), x, rtol=0, atol=1e-5)
    x64 = x.astype(np.float64)
    assert ycbcr_to_rgb(rgb_to_ycbcr(x64)).dtype == np.float64
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(x64)), x64, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_identities(dtype):
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (3, 8, 8)).astype(dtype)
    noise = rng.standard_normal((3, 8, 8)).astype(dtype)
    abar, abar_prev = 0.3, 0.7
    x = q_sample(x0, noise, abar)
    assert x.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(predict_x0(x, noise, abar), x0, rtol=0, atol=tol)
    # eta = 0: x_{t-1} is x0 noised to abar_prev with the same (recomputed) epsilon.
    np.testing.assert_allclose(ddim_update(x, x0, abar, abar_prev), q_sample(x0, noise, abar_prev), rtol=0, atol=tol)
    np.testing.assert_allclose(ddim_update(x, x0, abar, 1.0), x0, rtol=0, atol=tol)
    assert np.abs(predict_x0(x, 10 * noise, abar)).max() == 1
    assert np.abs(predict_x0(x, 10 * noise, abar, clip=False)).max() > 1
