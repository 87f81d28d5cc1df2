"""The noise schedule of the prior and its respacing to a short DDIM loop.

Follows guided-diffusion (openai/guided-diffusion, ``gaussian_diffusion.get_named_beta_schedule``,
``respace.space_timesteps`` and ``respace.SpacedDiffusion``), which DDFM uses unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

SectionCounts = Union[int, str, Sequence[int]]


ADM_LINEAR: Dict[str, Any] = {"type": "linear", "num_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                               "prediction": "epsilon"}
"""ADM's linear schedule, as trained by guided-diffusion and by ``dig2dig train-prior``."""


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """ADM's linear beta schedule (float64); both ends scale by ``1000 / num_timesteps``."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def alphas_cumprod(schedule: Mapping[str, Any]) -> np.ndarray:
    """abar_t of the model's training schedule (``dig2dig.schedule`` metadata), float64."""
    if schedule.get("type") != "linear":
        raise ValueError(f"unsupported noise schedule type {schedule.get('type')!r} (only 'linear')")
    betas = linear_betas(int(schedule["num_timesteps"]), float(schedule["beta_start"]), float(schedule["beta_end"]))
    return np.cumprod(1.0 - betas)


def space_timesteps(num_timesteps: int, section_counts: SectionCounts) -> List[int]:
    """Original timesteps kept by guided-diffusion's respacing, ascending.

    ``section_counts`` is an int, a list of ints or a string: ``"ddimN"`` takes the smallest
    integer stride that gives exactly N steps from 0; otherwise comma-separated counts split
    ``[0, num_timesteps)`` into equal sections, each strided evenly from its first to its last
    step with Python's ``round`` (ties to even: "25" of 1000 gives 0, 42, 83, 125, 166, ..., 999).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for step in range(1, num_timesteps):
                if len(range(0, num_timesteps, step)) == desired:
                    return list(range(0, num_timesteps, step))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        section_counts = [int(count) for count in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start = 0
    kept = set()
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride: float = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return sorted(kept)


@dataclass(frozen=True)
class Schedule:
    """A respaced schedule in loop order (first entry = first reverse step, noisiest).

    ``timesteps`` are the original training-step indices given to the UNet (int64, descending);
    ``alphas_cumprod`` / ``alphas_cumprod_prev`` are the respaced abar_t and abar_{t-1}
    (float64), recomputed from the respaced betas as guided-diffusion's SpacedDiffusion does.
    """

    timesteps: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray

    @classmethod
    def create(cls, steps: SectionCounts, schedule: Mapping[str, Any]) -> "Schedule":
        """Respace the model's schedule (``dig2dig.schedule`` metadata) to ``steps``."""
        kept = space_timesteps(int(schedule["num_timesteps"]), steps)
        if not kept:
            raise ValueError(f"respacing {steps!r} keeps no timesteps")
        return cls.from_timesteps(kept[::-1], schedule)

    @classmethod
    def from_timesteps(cls, timesteps: Sequence[int], schedule: Mapping[str, Any]) -> "Schedule":
        """The schedule that keeps exactly ``timesteps`` (strictly descending training-step indices),
        e.g. one placed by the DIG profile (``benchmarks/step_schedules.py``)."""
        num_timesteps = int(schedule["num_timesteps"])
        descending = [int(t) for t in timesteps]
        if not descending or any(a <= b for a, b in zip(descending, descending[1:])) \
                or not 0 <= descending[-1] <= descending[0] < num_timesteps:
            raise ValueError(f"timesteps must be strictly descending within [0, {num_timesteps}), got {descending}")
        abar = alphas_cumprod(schedule)[descending[::-1]]
        new_betas = 1.0 - abar / np.append(1.0, abar[:-1])
        respaced = np.cumprod(1.0 - new_betas)
        respaced_prev = np.append(1.0, respaced[:-1])
        return cls(timesteps=np.array(descending, dtype=np.int64),
                   alphas_cumprod=respaced[::-1].copy(),
                   alphas_cumprod_prev=respaced_prev[::-1].copy())

    def __len__(self) -> int:
        return len(self.timesteps)
