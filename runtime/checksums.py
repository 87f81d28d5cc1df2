"""SHA-256 sums of shipped files: the bundled prior is checked against ``models/default/SHA256SUMS``
whenever it is loaded, so a corrupt or modified model is refused before any work."""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ModelError


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path) -> None:
    """Check every file listed in ``folder/SHA256SUMS`` (``sha256sum`` format); a missing file or a
    mismatch is a :class:`ModelError` naming the file."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise ModelError(f"{sums}: checksum list missing")
    for line in sums.read_text().splitlines():
        expected, name = line.split()
        path = folder / name.lstrip("*")
        if not path.is_file():
            raise ModelError(f"{path}: shipped file missing")
        if sha256(path) != expected:
            raise ModelError(f"{path}: checksum mismatch (file corrupt or modified)")
