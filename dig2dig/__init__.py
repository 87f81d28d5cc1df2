"""dig2dig: Dig2DIG diffusion image fusion (see README).

``from dig2dig import Fuser`` gives :class:`dig2dig.runtime.fuser.Fuser`, imported on first use: importing
dig2dig stays light, and no backend loads until a Fuser is built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime.fuser import Fuser

__all__ = ["Fuser"]


def __getattr__(name: str) -> Any:
    if name == "Fuser":
        from .runtime.fuser import Fuser

        return Fuser
    raise AttributeError(f"module 'dig2dig' has no attribute {name!r}")
