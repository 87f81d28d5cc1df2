"""Checks of the files a command will write, run before any source is read or model loaded, so that a bad
path fails in a second with one line naming it instead of after minutes of fusion.

An output file goes in a folder that must exist and be writable; an output folder (``--save-dig-maps``,
``eval -o``, a video's image sequence) is made when first written, in a folder that must exist.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import numpy as np

from . import io
from .errors import InputError

PathLike = io.PathLike


def check_extension(name: str, known: Iterable[str], kind: str, or_else: str = "") -> str:
    """The lower-case extension of ``name``, refused unless it is one of ``known`` (``kind`` names them,
    ``or_else`` says what else the option takes)."""
    extension = os.path.splitext(name)[1].lower()
    if extension not in known:
        choices = ", ".join(sorted(known)) + (f", {or_else}" if or_else else "")
        raise InputError(f"{name}: unknown {kind} extension '{extension}' (use one of {choices})")
    return extension


def check_folder(folder: str, name: str) -> None:
    """Refuse ``name`` unless ``folder``, where it goes, is an existing folder this process may write in."""
    if not os.path.isdir(folder):
        raise InputError(f"{name}: output directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{name}: output directory {folder} is not writable")


def output_file(path: PathLike, known: Iterable[str], kind: str, or_else: str = "") -> str:
    """Check a file to be written: a ``known`` extension (:func:`check_extension`), a writable folder, and not a
    folder itself."""
    name = os.fspath(path)
    check_extension(name, known, kind, or_else)
    check_folder(os.path.dirname(os.path.abspath(name)), name)
    if os.path.isdir(name):
        raise InputError(f"{name}: is a directory")
    return name


def output_image(path: PathLike) -> str:
    """Check an image to be written (``io.write_image``): its extension picks the format."""
    return output_file(path, io.WRITE_DEPTHS, "image")


def output_folder(path: PathLike) -> str:
    """Check a folder to be written in: an existing writable one, or one that can be made in an existing one."""
    name = os.fspath(path)
    if os.path.exists(name):
        if not os.path.isdir(name):
            raise InputError(f"{name}: not a folder")
        check_folder(name, name)
    else:
        check_folder(os.path.dirname(os.path.abspath(name)), name)
    return name


def fuse_outputs(output: PathLike, save_raw: Optional[PathLike] = None,
                 save_dig_maps: Optional[PathLike] = None) -> None:
    """Check every file ``dig2dig fuse`` will write: the image, ``--save-raw`` and ``--save-dig-maps``."""
    output_image(output)
    if save_raw is not None:
        output_file(save_raw, (".npy",), "array")
    if save_dig_maps is not None:
        output_folder(save_dig_maps)


def init_noise(path: Optional[PathLike]) -> Optional[np.ndarray]:
    """The ``--init-noise`` array, read and checked (finite floats) before the model is loaded."""
    return None if path is None else io.read_npy(path)
