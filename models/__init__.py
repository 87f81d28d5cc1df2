"""Models shipped with dig2dig: ``default/`` holds our small prior (see its MODEL_CARD.md) and its
SHA256SUMS, which the runtime checks whenever it loads the prior (``dig2dig.runtime.api.default_model``).
A data package: it imports no other part of dig2dig."""
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
# The prior's model files in DEFAULT_DIR by precision: int8 is ``dig2dig export int8`` of the fp32 one.
PRECISIONS = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
