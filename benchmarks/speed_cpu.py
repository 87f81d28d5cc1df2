"""Fuse time per stage and peak memory of candidate settings against the defaults, on one pair, on the CPU.

Each candidate (``FIELD=VALUE`` words over ``Settings``, and ``model=PATH`` for another ONNX model than
the shipped prior; the defaults, or ``--base``, come first) fuses the pair once as a warm-up, then the timed runs
alternate between the candidates (one onnxruntime runner per model), so that every ratio is measured in
the same conditions. Peak memory: each candidate first fuses once in a
fresh process, whose maximum resident set size is read back (``getrusage``; measured before this process
grows, since Linux hands a child its parent's high-water mark).

    python benchmarks/speed_cpu.py --runs 3 dig_scale=2 dig_scale=4
    python benchmarks/speed_cpu.py --runs 3 model=runs/int8/model_int8.onnx
    python benchmarks/speed_cpu.py --base "steps=10 dig_scale=1 dig_tau=0.667" "" model=runs/int8/model_int8.onnx
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dig2dig.runtime import api
from dig2dig.runtime.bench import STAGES, stage_seconds, summarize
from dig2dig.runtime.settings import resolve

from machine import machine_line
from sweeps import ROOT, parse_overrides

PAIR = ROOT.parent / "shared" / "data" / "ivf" / "TNO"
PEAK = """
import json, resource, sys
from dig2dig.runtime import api
from dig2dig.runtime.settings import resolve
api.fuse(sys.argv[1], sys.argv[2], task=sys.argv[3], settings=resolve(sys.argv[3], **json.loads(sys.argv[4])),
         model=sys.argv[5] or None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def split_model(form: str) -> Tuple[str, Dict[str, Any]]:
    """A candidate's model path ("" for the shipped prior) and its settings overrides."""
    overrides = parse_overrides(form)
    return str(overrides.pop("model", "")), overrides


def peak_mib(a: Path, b: Path, task: str, form: str) -> float:
    """Maximum resident set size (MiB) of a fresh process that fuses the pair once."""
    model, overrides = split_model(form)
    out = subprocess.run([sys.executable, "-c", PEAK, str(a), str(b), task, json.dumps(overrides), model],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("forms", nargs="*", metavar="FIELD=VALUE", help="a candidate: FIELD=VALUE words, quoted")
    parser.add_argument("--a", type=Path, default=PAIR / "a" / "10.png", help="source A (default: TNO 10, 640x480)")
    parser.add_argument("--b", type=Path, default=PAIR / "b" / "10.png", help="source B")
    parser.add_argument("--task", default="ivf")
    parser.add_argument("--base", default="", metavar="FIELD=VALUE",
                        help="the first row, that the speed-ups are relative to (default: the defaults)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each candidate, alternating")
    args = parser.parse_args(argv)
    forms = list(dict.fromkeys([args.base] + list(args.forms)))
    models = {form: split_model(form)[0] for form in forms}
    settings = {form: resolve(args.task, **split_model(form)[1]) for form in forms}
    peaks = {form: peak_mib(args.a, args.b, args.task, form) for form in forms}
    runners = {model: api.open_runner(model or None) for model in set(models.values())}
    times: Dict[str, List[Dict[str, float]]] = {form: [] for form in forms}
    for form in forms:
        api.fuse(args.a, args.b, task=args.task, settings=settings[form], runner=runners[models[form]])
    for _ in range(args.runs):
        for form in forms:
            result = api.fuse(args.a, args.b, task=args.task, settings=settings[form], runner=runners[models[form]])
            times[form].append(stage_seconds(result.seconds))
    for runner in runners.values():
        runner.close()
    base = summarize([t["total"] for t in times[forms[0]]])["median"]
    print(f"{args.a} + {args.b}, {args.task}, onnxruntime, {args.runs} runs each after a warm-up, alternating; "
          f"{machine_line()}")
    print()
    print("| settings | " + " | ".join(f"{name} s" for name in STAGES) + " | speed-up | peak RSS MiB |")
    print("|---|" + "---:|" * (len(STAGES) + 2))
    for form in forms:
        medians = [summarize([t[name] for t in times[form]])["median"] for name in STAGES]
        print(f"| {form or 'defaults'} ({settings[form].describe()}) | " + " | ".join(f"{m:.2f}" for m in medians)
              + f" | {base / medians[-1]:.2f}x | {peaks[form]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
