"""The package's layering (docs/architecture.md): every module imports, and no module
imports one of a higher layer or of another package on its own layer (lazy imports inside
functions included)."""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reasonjax"

# Layer of each module, by the longest matching dotted prefix. A module may import its own
# package (the first two name parts) and any module of a strictly lower layer.
LAYERS = {
    "reasonjax": 0, "reasonjax.config": 0, "reasonjax.fileio": 0,
    "reasonjax.models": 1,
    "reasonjax.parallel": 2,
    "reasonjax.checkpoint": 3,
    "reasonjax.data": 4, "reasonjax.eval": 4,
    "reasonjax.search": 5, "reasonjax.train": 5,
    "reasonjax.driver": 6,
    "reasonjax.rl": 7,
    "reasonjax.recipes": 8,
    "reasonjax.cli": 9, "reasonjax.smoke": 9, "reasonjax.data.cli": 9,
    "reasonjax.search.cli": 9, "reasonjax.train.cli": 9, "reasonjax.recipes.cli": 9,
}


TOP = max(LAYERS.values())


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return LAYERS[name]
    raise KeyError(f"{module} has no layer: add it to LAYERS and docs/architecture.md")


def package(module: str) -> str:
    """The package a module belongs to; a subpackage's cli is a package of its own."""
    return module if module.endswith(".cli") else ".".join(module.split(".")[:2])


def modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def imports(module: str) -> set[str]:
    """Every reasonjax module ``module`` imports, at the top or inside functions."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("reasonjax")}
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("reasonjax"):
            for a in node.names:  # `from reasonjax import parallel` imports a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in ALL else node.module)
    return out


ALL = set(modules())


def test_every_module_has_a_layer_and_imports():
    for name in sorted(ALL):
        layer(name)
        importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_imports_a_higher_layer(name):
    bad = [target for target in imports(name)
           if package(target) != package(name) and layer(target) >= layer(name)
           and layer(name) not in (0, TOP)]  # base helpers and the CLIs may share a layer
    assert not bad, (f"{name} (layer {layer(name)}) imports "
                     + ", ".join(f"{t} (layer {layer(t)})" for t in bad))


def test_the_layer_map_reads_as_documented():
    assert layer("reasonjax.train.loop") < layer("reasonjax.driver.env") < \
        layer("reasonjax.rl.loop") < layer("reasonjax.recipes.alphamath") < \
        layer("reasonjax.train.cli")
    assert layer("reasonjax.search.mcts") == layer("reasonjax.train.rl")
    assert package("reasonjax.search.mcts") != package("reasonjax.train.rl")
    assert package("reasonjax.train.cli") != package("reasonjax.train.loop")
