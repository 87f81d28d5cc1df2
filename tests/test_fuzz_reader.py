"""Fuzzing ``io.read_source``: mutated real files end in a ``Source`` or an ``InputError``, nothing else.

A short, deterministic run for CI; benchmarks/fuzz_reader.py runs the same property for longer.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Dict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_reader_cases as cases

SEEDS: Dict[str, bytes] = cases.seeds()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_corpus_is_what_the_cases_module_writes() -> None:
    """The committed malformed files are reproducible (the encoded seeds depend on the codec versions)."""
    assert {name: SEEDS[name] for name in cases.malformed_seeds()} == cases.malformed_seeds()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_ends_in_a_source_or_an_input_error(workdir: Path, name: str) -> None:
    expected = "decoded" if "seed_" in name else "refused"
    assert cases.outcome(workdir / name, SEEDS[name]) == expected


@settings(max_examples=3000, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SEEDS)), steps=st.integers(1, 4), rng=st.randoms(use_true_random=False))
def test_mutated_files_end_in_a_source_or_an_input_error(workdir: Path, name: str, steps: int,
                                                          rng: random.Random) -> None:
    cases.outcome(workdir / f"input{Path(name).suffix}", cases.mutate(SEEDS[name], rng, steps))
