"""The ``dig2dig`` program: the runtime's commands and, imported only when they run, the PyTorch-side
``export`` and ``train-prior`` (so ``dig2dig fuse`` works where torch is not installed)."""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from .runtime.cli import main as runtime_main
from .runtime.errors import Dig2DigError


def _export_command(name: str, argv: List[str]) -> int:
    try:
        from .export.cli import main as export_main
    except ImportError as exc:
        raise Dig2DigError(f"'dig2dig {name}' needs PyTorch: pip install 'dig2dig[export]' ({exc})") from exc
    return export_main([name] + argv)


def _serve_command(argv: List[str]) -> int:
    from .serve import main as serve_main  # the server's launcher and the repository writer

    return serve_main(argv)


EXTERNAL = {
    "export": ("export the UNet to ONNX or a TensorRT engine (needs torch for ONNX)",
               lambda argv: _export_command("export", argv)),
    "train-prior": ("train the small default prior (needs torch)", lambda argv: _export_command("train-prior", argv)),
    "serve": ("serve fusion with Triton Inference Server (extra 'serve')", _serve_command),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``dig2dig ARGS`` (``argv`` without the program name; default ``sys.argv[1:]``)."""
    return runtime_main(argv, EXTERNAL)


if __name__ == "__main__":
    sys.exit(main())
