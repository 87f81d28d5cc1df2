"""Models shipped with dig2dig: ``default/`` holds our small prior (see its MODEL_CARD.md) and its
SHA256SUMS, which the runtime checks whenever it loads the prior (``dig2dig.runtime.api.default_model``).
A data package: it imports no other part of dig2dig."""
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
