"""Machine and library facts printed above every CPU benchmark table."""
from __future__ import annotations

import datetime
import os
import platform
from typing import Dict


def cpu_model() -> str:
    """The first ``model name`` of /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, str]:
    """CPU model, logical cores, onnxruntime / torch / numpy versions (where installed), UTC date."""
    import numpy

    info = {"cpu": cpu_model(), "cores": str(os.cpu_count()), "python": platform.python_version(),
            "numpy": numpy.__version__}
    for name in ("onnxruntime", "torch"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = "not installed"
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def machine_line() -> str:
    """``machine_info`` as one markdown line."""
    return "; ".join(f"{key} {value}" for key, value in machine_info().items())


def bundled_prior() -> str:
    """Which bundled prior a benchmark ran: its path and the start of its SHA-256."""
    from dig2dig.models import DEFAULT_DIR
    from dig2dig.runtime.api import default_model
    from dig2dig.runtime.checksums import sha256

    path = default_model()
    return f"{path.relative_to(DEFAULT_DIR.parents[1]).as_posix()}, SHA-256 {sha256(path)[:12]}"
