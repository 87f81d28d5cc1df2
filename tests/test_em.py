"""EM step vs DDFM's own EM_onestep (tests/data/reference/ddfm_em), and the Dig2DIG source weights."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import em_iterations
from dig2dig.kernels.em import em_init, em_step
from test_kernels_numpy import noisy_tno_pair


# em_step takes the sources in A/B order: DDFM's V is source A, its I source B.
def _inputs(em_ref, dtype):
    return tuple(em_ref[key][0, 0].astype(dtype) for key in ("f_pre", "I", "V"))


def test_otfs_match_psf2otf(em_ref):
    state = em_init((128, 128), np.float32)
    assert state.conj_k1.dtype == np.complex64 and state.denom.dtype == np.float32
    half = slice(0, 128 // 2 + 1)  # the rfft2 columns
    assert state.conj_k1.shape == state.denom.shape == (128, 65)
    np.testing.assert_allclose(np.conj(state.conj_k1), em_ref["init_fft_k1"][:, half], atol=1e-6)
    np.testing.assert_allclose(np.conj(state.conj_k2), em_ref["init_fft_k2"][:, half], atol=1e-6)
    denom = 1 + em_ref["init_fft_k1sq"] + em_ref["init_fft_k2sq"]
    np.testing.assert_allclose(state.denom, denom.real[:, half], atol=1e-5)
    assert em_init((128, 128), np.float64).conj_k1.dtype == np.complex128


@pytest.mark.parametrize("dtype, tag, atol", [(np.float64, "f64", 1e-9), (np.float32, "f32", 1e-5)])
def test_iterations_match_ddfm(em_ref, dtype, tag, atol):
    f_pre, I, V = _inputs(em_ref, dtype)
    state = em_init(I.shape, dtype)
    for k in range(em_iterations(em_ref)):
        F, state = em_step(f_pre, V, I, state, lamb=0.5, rho=0.001)
        assert F.dtype == dtype and state.F1.dtype == dtype
        np.testing.assert_allclose(F, em_ref[f"F_{tag}_iter{k}"][0, 0], rtol=0, atol=atol)
        assert float(state.tau_a) == pytest.approx(em_ref[f"tau_a_{tag}"][k], rel=1e-6)
        assert float(state.tau_b) == pytest.approx(em_ref[f"tau_b_{tag}"][k], rel=1e-6)
        if tag == "f64":
            np.testing.assert_allclose(state.F1, em_ref[f"F1_f64_iter{k}"][0, 0], rtol=0, atol=1e-9)
            np.testing.assert_allclose(state.F2, em_ref[f"F2_f64_iter{k}"][0, 0], rtol=0, atol=1e-9)


def _run(em_ref, steps, w_i=None, w_v=None):
    f_pre, I, V = _inputs(em_ref, np.float32)
    state = em_init(I.shape, np.float32)
    for _ in range(steps):
        F, state = em_step(f_pre, V, I, state, w_a=w_v, w_b=w_i)
    return F, state


def test_uniform_weights_are_ddfm(em_ref):
    half = np.full((128, 128), 0.5, np.float32)
    F_none, state_none = _run(em_ref, 3)
    F_half, state_half = _run(em_ref, 3, half, half)
    np.testing.assert_array_equal(F_half, F_none)
    assert state_half.tau_a == state_none.tau_a and state_half.tau_b == state_none.tau_b


def test_weights_pull_toward_the_favoured_source(em_ref):
    # Uniform: mean |F - I| = 0.171, |F - V| = 0.151; w_i = 0.9: 0.049 / 0.273; w_v = 0.9: 0.288 / 0.034.
    _, I, V = _inputs(em_ref, np.float32)
    F_uniform, _ = _run(em_ref, 1)
    favour = np.full((128, 128), 0.9, np.float32)
    F_i, _ = _run(em_ref, 1, favour, 1 - favour)
    F_v, _ = _run(em_ref, 1, 1 - favour, favour)
    assert np.abs(F_i - I).mean() < 0.9 * np.abs(F_uniform - I).mean()
    assert np.abs(F_v - V).mean() < 0.9 * np.abs(F_uniform - V).mean()


def test_weights_act_per_pixel(em_ref):
    _, I, _ = _inputs(em_ref, np.float32)
    w_i = np.full((128, 128), 0.5, np.float32)
    w_i[:, 64:] = 0.9
    F_uniform, _ = _run(em_ref, 1)
    F, _ = _run(em_ref, 1, w_i, 1 - w_i)
    left, right = np.s_[:, :64], np.s_[:, 64:]
    assert np.abs(F[right] - I[right]).mean() < 0.9 * np.abs(F_uniform[right] - I[right]).mean()
    # Only the TV proximal term (from the unweighted H) couples the halves: the left half barely moves.
    assert np.abs(F[left] - F_uniform[left]).max() < 1e-2 * np.abs(F[right] - F_uniform[right]).max()


def test_weights_come_in_pairs(em_ref):
    f_pre, I, V = _inputs(em_ref, np.float32)
    with pytest.raises(ValueError, match="both"):
        em_step(f_pre, V, I, em_init(I.shape), w_b=np.full(I.shape, 0.5, np.float32))


def test_f_is_a_blend_of_the_sources_mirrored_from_f_pre():
    """With rho far below the E-step weights F = (D I + C V) / (C + D), C ~ 1 / |I - f|, D ~ 1 / |f - V|
    (benchmarks/em_mirror.py): F lies between the sources, and DDFM's step sends it away from the
    source f_pre is near (share of I 0.05 for f_pre at 0.95; toward I it is capped at 2/3 by D <= 2 C),
    and at DIG's own blend it returns the average."""
    I, V = np.full((32, 32), 0.6, np.float32), np.full((32, 32), -0.4, np.float32)  # noqa: E741
    share = {}
    for near, f_pre in (("I", I - 0.05), ("V", V + 0.05)):
        F, _ = em_step(f_pre, V, I, em_init(I.shape))
        share[near] = float(((F - V) / (I - V)).mean())
    assert share["I"] == pytest.approx(0.05, abs=1e-3) and share["V"] == pytest.approx(2 / 3, abs=1e-3)
    # f_pre already DIG's blend (share w_i of I): the step returns w_i (1 - a) / (w_i (1 - a) + w_v a) = 1/2.
    w_i = np.full(I.shape, 0.64, np.float32)
    F, _ = em_step(V + 0.64 * (I - V), V, I, em_init(I.shape), w_a=1 - w_i, w_b=w_i)
    assert float(((F - V) / (I - V)).mean()) == pytest.approx(0.5, abs=1e-3)
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    w_i = np.random.default_rng(0).uniform(0.05, 0.95, I.shape).astype(np.float32)
    low, high = np.minimum(I, V), np.maximum(I, V)
    for window in (1, 9):
        F, _ = em_step(f_pre, V, I, em_init(I.shape), w_a=1 - w_i, w_b=w_i, window=window)
        assert ((F >= low - 1e-3) & (F <= high + 1e-3)).all()


@pytest.mark.parametrize("power", [1.0, 0.5, 0.0])
def test_power_moves_the_blend_to_the_weights(power):
    """With the E-step weights raised to gamma, F's odds of I are (w_i / w_v) ((1 - a) / a)^gamma for
    f_pre at share a of I: at a = w_i the step returns odds (w_i / w_v)^(1 - gamma), DDFM's average
    at gamma = 1 and the weights themselves at gamma = 0; F stays between the sources."""
    I, V = np.full((32, 32), 0.6, np.float32), np.full((32, 32), -0.4, np.float32)  # noqa: E741
    w_i = np.full(I.shape, 0.64, np.float32)
    F, _ = em_step(V + 0.64 * (I - V), V, I, em_init(I.shape), w_a=1 - w_i, w_b=w_i, power=power)
    odds = (0.64 / 0.36) ** (1 - power)
    assert float(((F - V) / (I - V)).mean()) == pytest.approx(odds / (1 + odds), abs=1e-3)
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    w_i = np.random.default_rng(0).uniform(0.05, 0.95, I.shape).astype(np.float32)
    F, state = em_step(f_pre, V, I, em_init(I.shape), w_a=1 - w_i, w_b=w_i, window=9, power=power)
    assert ((F >= np.minimum(I, V) - 1e-3) & (F <= np.maximum(I, V) + 1e-3)).all()
    _, ddfm = em_step(f_pre, V, I, em_init(I.shape), w_a=1 - w_i, w_b=w_i, window=9)
    assert (state.tau_a, state.tau_b) == (ddfm.tau_a, ddfm.tau_b)  # the E-step's taus stay DDFM's
    if power == 0:
        np.testing.assert_allclose(F, w_i * I + (1 - w_i) * V, atol=2e-3)


@pytest.mark.parametrize("power", [-0.1, 1.5])
def test_power_must_be_in_0_1(power):
    I = np.zeros((8, 8), np.float32)  # noqa: E741
    with pytest.raises(ValueError, match=r"em_power must be in \[0, 1\]"):
        em_step(I, I, I, em_init(I.shape), power=power)


def test_em_window_removes_the_per_pixel_flips():
    """DDFM's per-pixel E-step sends F away from whichever source f_pre's noise brings it closer to
    (the mirror of the test above); the windowed E-step does not. Measured on TNO 22: the share
    s = (F - V) / (I - V) varies between horizontal neighbours by 0.181 on average with window 1 and
    0.021 with window 5, and F's deviation from the sources' mean correlates with f_pre's noise at
    -0.86 with window 1 and -0.12 with window 5."""
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    apart = np.abs(I - V) > 0.1
    neighbours = apart[:, 1:] & apart[:, :-1]
    flips, correlation = {}, {}
    for window in (1, 5):
        F, state = em_step(f_pre, V, I, em_init(I.shape), window=window)
        share = np.where(apart, (F - V) / np.where(apart, I - V, 1), 0)
        flips[window] = np.abs(np.diff(share, axis=1))[neighbours].mean()
        middle = 0.5 * (I + V)
        correlation[window] = np.corrcoef((F - middle).ravel(), (f_pre - middle).ravel())[0, 1]
        assert np.isfinite(F).all() and F.dtype == np.float32
    assert flips[5] < 0.25 * flips[1]
    assert correlation[1] < -0.5 < correlation[5]


def test_em_window_keeps_smooth_weights_and_the_taus():
    """Where C and D are already constant (constant offsets between f, I and V) the geometric mean
    changes nothing; the tau updates use the per-pixel C, D in every case (DDFM's)."""
    f_pre, I, V = noisy_tno_pair()  # noqa: E741
    offset_f, offset_i = (V + 0.3).astype(np.float32), (V + 0.5).astype(np.float32)
    plain, _ = em_step(offset_f, V, offset_i, em_init(V.shape))
    windowed, _ = em_step(offset_f, V, offset_i, em_init(V.shape), window=5)
    np.testing.assert_allclose(windowed, plain, rtol=0, atol=1e-6)
    _, state_plain = em_step(f_pre, V, I, em_init(I.shape))
    _, state_windowed = em_step(f_pre, V, I, em_init(I.shape), window=9)
    assert state_windowed.tau_a == state_plain.tau_a and state_windowed.tau_b == state_plain.tau_b


@pytest.mark.parametrize("window", [0, 4, 257])
def test_em_window_must_be_odd_and_fit(em_ref, window):
    f_pre, I, V = _inputs(em_ref, np.float32)  # 128 x 128: a radius of 128 does not fit
    with pytest.raises(ValueError, match="EM window"):
        em_step(f_pre, V, I, em_init(I.shape), window=window)
