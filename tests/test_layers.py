"""Lower layers never import upward: io/, models/, utils/, runtime/, runs/ know nothing of services/ or cli/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vggtctl"
# layer -> the packages it must not import (module-level or inside functions)
FORBIDDEN = {
    "io": ("vggtctl.services", "vggtctl.cli"),
    "models": ("vggtctl.services", "vggtctl.cli", "vggtctl.io"),
    "utils": ("vggtctl.services", "vggtctl.cli", "vggtctl.io", "vggtctl.models"),
    "runtime": ("vggtctl.services", "vggtctl.cli", "vggtctl.io", "vggtctl.models"),
    "runs": ("vggtctl.services", "vggtctl.cli"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
