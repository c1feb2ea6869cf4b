"""The package's layers import only downward (docs/ARCHITECTURE.md draws them).

Every ``import rabusseg...`` of every module, top-level or inside a function (lazy imports count:
they are dependencies all the same), must go to its own layer or one below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rabusseg"
LAYERS = [
    ("errors", "paths", "constants", "devices", "files"),
    ("config",),
    ("data",),
    ("models",),
    ("losses",),
    ("checkpoint", "inference"),
    ("evaluation",),
    ("engine",),
    ("app",),
    ("cli", "__main__"),
]
"""Lowest first: a module may import its own layer and the ones before it."""


def layer_of(module: str) -> int:
    """``rabusseg.engine.loop`` -> the index of ``engine`` in LAYERS."""
    top = module.split(".")[1] if module.count(".") else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: not in any layer of tests/test_layers.py")


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "rabusseg":  # the package facade re-exports Segmenter lazily
            out.append((name, path))
    return out


def imported(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("rabusseg.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rabusseg.") and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_module_is_in_a_layer() -> None:
    for name, _ in modules():
        layer_of(name)


@pytest.mark.parametrize(("name", "path"), modules(), ids=[n for n, _ in modules()])
def test_imports_go_downward(name: str, path: Path) -> None:
    own = layer_of(name)
    upward = [f"line {line}: {target}" for line, target in imported(path) if layer_of(target) > own]
    assert not upward, f"{name} (layer {LAYERS[own]}) imports upward: {'; '.join(upward)}"


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """Seen failing: a data module that imported the engine would be reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rabusseg.engine.trainer import train\n")
    assert [layer_of(t) for _, t in imported(bad)] == [layer_of("rabusseg.engine")]
    assert layer_of("rabusseg.engine") > layer_of("rabusseg.data.folder")
