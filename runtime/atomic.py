"""Write files so that readers see either the old version or the complete new one."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

# A scratch folder this old was left by a writer that was killed (a write takes seconds): the next write
# of the same file removes it. Younger ones may belong to a writer still at work and are left alone.
STALE_SECONDS = 3600


@contextmanager
def atomic_replace(*paths: Path) -> Iterator[List[Path]]:
    """Yield scratch paths (same names, in a hidden folder beside ``paths[0]``) to write.

    On success each scratch file replaces its target with ``os.replace``, in the order given, so
    list the main file last (an ONNX model after its external data file). On error the targets are
    left untouched and the scratch folder is removed. The target folder must exist. Scratch files
    keep the target names because ONNX external data is found by a name relative to the model file.
    Scratch folders of the same target older than ``STALE_SECONDS`` (a killed writer's) are removed.
    """
    paths = tuple(Path(p) for p in paths)
    remove_stale(paths[0])
    scratch = Path(tempfile.mkdtemp(prefix=f".{paths[0].name}.", dir=paths[0].parent))
    try:
        staged = [scratch / p.name for p in paths]
        yield staged
        for src, dst in zip(staged, paths):
            os.replace(src, dst)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_stale(path: Path) -> None:
    """Remove the scratch folders beside ``path`` that killed writers of it left (``STALE_SECONDS``)."""
    cutoff = time.time() - STALE_SECONDS
    for scratch in path.parent.glob(f".{glob.escape(path.name)}.*"):
        try:
            if scratch.is_dir() and scratch.stat().st_mtime < cutoff:
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError:
            continue
