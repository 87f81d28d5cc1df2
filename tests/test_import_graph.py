"""The packages import one way: kernels and models import no other dig2dig package, the runtime imports
only those two, calibration and export sit above the runtime, and nothing imports benchmarks. The
runtime needs only numpy and OpenCV at import; backends and the eval extra are imported where used."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the dig2dig packages its modules may import (itself included).
ALLOWED: Dict[str, Set[str]] = {
    "kernels": {"kernels"},
    "models": {"models"},
    "runtime": {"runtime", "kernels", "models"},
    "calibration": {"calibration", "runtime", "kernels", "models"},
    "export": {"export", "calibration", "runtime", "kernels", "models"},
}
# Third-party modules the runtime layers import at module level, and where used (backends, the eval extra).
AT_IMPORT = {"numpy", "cv2"}
WHERE_USED = AT_IMPORT | {"onnxruntime", "tensorrt", "pycuda", "scipy", "skimage", "matplotlib"}


def imports(path: Path) -> Iterator[Tuple[str, bool]]:
    """Absolute names imported by ``path`` (relative imports resolved within dig2dig), each with whether the
    import runs at module level."""
    package = ["dig2dig"] + list(path.relative_to(ROOT).parent.parts)
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else [])), id(node) in top
            elif node.module:
                yield node.module, id(node) in top


def modules(folder: str) -> Iterator[Path]:
    return (p for p in sorted((ROOT / folder).rglob("*.py")) if "__pycache__" not in p.parts)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_packages_import_one_way(folder: str) -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {name}" for path in modules(folder) for name, _ in imports(path)
             if name.split(".")[0] in ("dig2dig", "benchmarks") and
             (name.split(".")[0] == "benchmarks" or name.split(".")[1] not in ALLOWED[folder])]
    assert not wrong, "\n".join(wrong)


@pytest.mark.skipif(not hasattr(sys, "stdlib_module_names"), reason="needs Python >= 3.10 to tell the stdlib")
@pytest.mark.parametrize("folder", ["kernels", "models", "runtime"])
def test_runtime_layers_need_only_numpy_and_opencv(folder: str) -> None:
    wrong = []
    for path in modules(folder):
        for name, at_import in imports(path):
            top = name.split(".")[0]
            if top == "dig2dig" or top in sys.stdlib_module_names:  # type: ignore[attr-defined]
                continue
            if top not in (AT_IMPORT if at_import else WHERE_USED):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}" + (" at module level" if at_import else ""))
    assert not wrong, "\n".join(wrong)


def test_the_fuse_command_loads_no_research_or_training_code() -> None:
    """Building every command's parser (what ``dig2dig fuse`` does first) loads neither torch nor the export,
    calibration or eval-extra packages."""
    code = ("import sys, dig2dig.cli as c; from dig2dig.runtime import api, cli; cli.build_parser(c.EXTERNAL); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tqdm', 'scipy', "
            "'skimage', 'matplotlib', 'onnx') or m.startswith(('dig2dig.export', 'dig2dig.calibration')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
