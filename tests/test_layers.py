"""Lower layers never import upward: data/, io/, models/, utils/, runtime/, runs/ know nothing of services/
or cli/; data/ (scene readers, camera models, preprocessing, samples) builds on io/ only, never on models/
or launch/.

Imports under ``if TYPE_CHECKING:`` (annotations only) do not count: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vggtctl"
# layer -> the packages it must not import (module-level or inside functions)
FORBIDDEN = {
    "data": ("vggtctl.services", "vggtctl.cli", "vggtctl.launch", "vggtctl.models"),
    "io": ("vggtctl.services", "vggtctl.cli", "vggtctl.launch", "vggtctl.data"),
    "models": ("vggtctl.services", "vggtctl.cli", "vggtctl.io"),
    "utils": ("vggtctl.services", "vggtctl.cli", "vggtctl.io", "vggtctl.models"),
    "runtime": ("vggtctl.services", "vggtctl.cli", "vggtctl.io", "vggtctl.models"),
    "runs": ("vggtctl.services", "vggtctl.cli"),
    "launch": ("vggtctl.services", "vggtctl.cli", "vggtctl.io", "vggtctl.models"),
}


def _type_only(tree: ast.AST) -> set[int]:
    """ids of nodes under ``if TYPE_CHECKING:``: annotations only, never imported at run time."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_import_upward(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"vggtctl/{layer}/ has no modules"
    bad = [
        f"{f.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for f in files
        for line, name in _imports(f)
        if any(name == up or name.startswith(up + ".") for up in FORBIDDEN[layer])
    ]
    assert bad == []


@pytest.mark.parametrize(
    "module",
    [
        "vggtctl.cli",
        "vggtctl.services.infer",
        "vggtctl.services.infer_chunked",
        "vggtctl.services.metrics.align",
    ],
)
def test_inference_does_not_load_the_eth3d_kernels(module: str) -> None:
    """numba and llvmlite (the ETH3D protocol's compiled kernels) cost ~25-30 MiB resident and ~0.15 s at import;
    ``vggtctl infer`` never runs them. Loaded through ``services.metrics``' eager ``__init__``, they lifted the
    one-pass tiny forward's measured peak ~10 % above the memory plan's fit (CI: 15.2 % off, over its 15 %)."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in ('numba', 'llvmlite') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parent, env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.stdout.strip() == "[]", proc.stdout


def test_the_metrics_package_still_exports_its_names_lazily() -> None:
    import importlib

    import vggtctl.services.metrics as metrics

    assert metrics.__all__ == sorted(metrics._MODULE_OF) and len(metrics.__all__) == 28
    for name in metrics.__all__:
        home = importlib.import_module(f"vggtctl.services.metrics.{metrics._MODULE_OF[name]}")
        assert getattr(metrics, name) is getattr(home, name), name
    with pytest.raises(AttributeError):
        _ = metrics.no_such_metric
