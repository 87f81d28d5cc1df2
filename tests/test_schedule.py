"""Schedule and respacing vs guided-diffusion / DDFM (tests/data/reference/ddfm_sampler)."""
from __future__ import annotations


import numpy as np
import pytest

from dig2dig.runtime.schedule import ADM_LINEAR, Schedule, linear_betas, space_timesteps


@pytest.mark.parametrize("steps", [10, 25])
def test_schedule_matches_ddfm(sampler_ref, steps):
    # The reference stores the respaced arrays by respaced index (ascending t); Schedule is in loop order.
    for spec in (steps, str(steps)):
        schedule = Schedule.create(spec, ADM_LINEAR)
        assert len(schedule) == steps
        assert schedule.timesteps.dtype == np.int64
        np.testing.assert_array_equal(schedule.timesteps, sampler_ref[f"r{steps}_timesteps_model"])
        np.testing.assert_array_equal(schedule.timesteps, sampler_ref[f"r{steps}_timestep_map"][::-1])
        np.testing.assert_allclose(schedule.alphas_cumprod, sampler_ref[f"r{steps}_alphas_cumprod_respaced"][::-1],
                                   rtol=1e-13, atol=0)
        np.testing.assert_allclose(schedule.alphas_cumprod_prev,
                                   sampler_ref[f"r{steps}_alphas_cumprod_prev_respaced"][::-1], rtol=1e-13, atol=0)


def test_even_stride_rounds_ties_to_even():
    assert space_timesteps(1000, "10") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    kept = space_timesteps(1000, "25")
    assert len(kept) == 25 and kept[:5] == [0, 42, 83, 125, 166] and kept[-5:] == [832, 874, 916, 957, 999]


def test_sections_and_ddim_striding():
    kept = space_timesteps(300, [10, 15, 20])
    assert len(kept) == 45
    assert kept[:10] == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert kept[10] == 100 and kept[24] == 199 and kept[25] == 200 and kept[-1] == 299
    assert space_timesteps(300, "10,15,20") == kept
    assert space_timesteps(1000, "ddim10") == list(range(0, 1000, 100))
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    np.testing.assert_array_equal(Schedule.create("ddim10", ADM_LINEAR).timesteps, np.arange(900, -1, -100))
    assert space_timesteps(1000, 1000) == list(range(1000))


def test_full_schedule_is_the_base_schedule():
    schedule = Schedule.create(1000, ADM_LINEAR)
    abar = np.cumprod(1.0 - linear_betas())
    np.testing.assert_allclose(schedule.alphas_cumprod[::-1], abar, rtol=1e-12)
    assert schedule.alphas_cumprod_prev[-1] == 1.0


def test_linear_betas_scale_with_length():
    betas = linear_betas(500)
    assert betas.dtype == np.float64 and len(betas) == 500
    assert betas[0] == pytest.approx(2e-4) and betas[-1] == pytest.approx(0.04)
    assert linear_betas()[0] == 1e-4 and linear_betas()[-1] == 0.02


def test_invalid_requests_raise():
    with pytest.raises(ValueError, match="schedule type"):
        Schedule.create(10, dict(ADM_LINEAR, type="cosine"))
    with pytest.raises(ValueError, match="cannot divide"):
        space_timesteps(100, 101)
    with pytest.raises(ValueError, match="integer stride"):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ValueError, match="keeps no timesteps"):
        Schedule.create(0, ADM_LINEAR)
