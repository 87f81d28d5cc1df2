"""Write files so that readers see either the old version or the complete new one."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List


@contextmanager
def atomic_replace(*paths: Path) -> Iterator[List[Path]]:
    """Yield scratch paths (same names, in a hidden folder beside ``paths[0]``) to write.

    On success each scratch file replaces its target with ``os.replace``, in the order given, so
    list the main file last (an ONNX model after its external data file). On error the targets are
    left untouched and the scratch folder is removed. The target folder must exist. Scratch files
    keep the target names because ONNX external data is found by a name relative to the model file.
    """
    paths = tuple(Path(p) for p in paths)
    scratch = Path(tempfile.mkdtemp(prefix=f".{paths[0].name}.", dir=paths[0].parent))
    try:
        staged = [scratch / p.name for p in paths]
        yield staged
        for src, dst in zip(staged, paths):
            os.replace(src, dst)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
