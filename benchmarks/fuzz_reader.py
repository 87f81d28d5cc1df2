"""Fuzzing the source reader for long: the property of tests/test_fuzz_reader.py (every mutated seed ends
in a decoded ``Source`` or an ``InputError`` naming the file) over N inputs or T seconds, with Python's
seeded ``random`` instead of hypothesis. Counts the outcomes and the slowest input; an input that breaks
the property stops the run with its traceback, and one that crashes the process is left in ``--workdir``.

    python benchmarks/fuzz_reader.py --seconds 600
    python benchmarks/fuzz_reader.py --inputs 2000 --seed 1
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzz_reader_cases as cases  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long (default 60)")
    p.add_argument("--inputs", type=int, help="stop after this many inputs (default: no count limit)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    p.add_argument("--workdir", type=Path, help="where each input is written (default: a temporary folder)")
    args = p.parse_args(argv)
    seeds = cases.seeds()
    names = sorted(seeds)
    rng = random.Random(args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fuzz_reader_"))
    counts: Counter = Counter()
    slowest, slowest_name = 0.0, ""
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds and (args.inputs is None or sum(counts.values()) < args.inputs):
        name = rng.choice(names)
        data = cases.mutate(seeds[name], rng, rng.randint(1, 4))
        begin = time.perf_counter()
        counts[cases.outcome(workdir / f"input{Path(name).suffix}", data)] += 1
        took = time.perf_counter() - begin
        if took > slowest:
            slowest, slowest_name = took, name
    total = sum(counts.values())
    print(f"{total} inputs in {time.perf_counter() - start:.0f} s from {len(seeds)} seeds (seed {args.seed}): "
          f"{counts['decoded']} decoded, {counts['refused']} InputError, 0 other; "
          f"slowest {slowest * 1000:.0f} ms (a mutated {slowest_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
