"""Imports flow one way along the data path: store <- encode <- models <- rank <- engine <- service /
evaluation / cli. A module may import its own layer and the layers below it, never above."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layer of each top-level module or package of liverec (higher may import lower).
LAYERS: dict[str, int] = {
    "errors": 0, "types": 0, "_extras": 0, "validate": 1, "settings": 1, "jobs": 1,
    "store": 2, "encode": 3, "models": 4, "rank": 5,
    "state": 6, "state_redis": 6, "snapshot": 6, "ingest": 6, "replica": 6, "items": 6, "lifecycle": 6, "engine": 7, "data": 1, "demo": 8, "importer": 8,
    "service": 9, "evaluation": 9, "cli": 10, "__main__": 11, "__init__": 11,
}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported liverec module, line) for every import in ``path``, lazy ones included."""
    mod = path.relative_to(SRC).with_suffix("").parts
    package = mod[:-1] if path.name != "__init__.py" else mod[:-1]
    if path.name == "__init__.py":
        package = mod[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("liverec"):
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                out += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("liverec")]
    return out


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return top, LAYERS[top]


def test_every_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in (SRC / "liverec").iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert tops <= set(LAYERS), f"unlayered: {sorted(tops - set(LAYERS))}"


def test_imports_only_go_down_the_data_path():
    bad = []
    for path in sorted((SRC / "liverec").rglob("*.py")):
        me = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mine, level = _layer(me if not me.endswith("__init__") or me.count(".") > 1 else "liverec")
        for target, line in _imports(path):
            if target == "liverec" or target.split(".")[1] not in LAYERS:
                continue  # the package root (its __version__): the public facade, not a layer
            theirs, other = _layer(target)
            if theirs != mine and other > level:
                bad.append(f"{path.relative_to(SRC)}:{line} ({mine}) imports {target} ({theirs})")
    assert not bad, "imports against the data path:\n" + "\n".join(bad)


def _code_strings(path: Path) -> set[str]:
    """String constants of ``path``'s code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs}


def test_the_rank_pipeline_names_no_source():
    # Sources differ by the abilities they declare (models.base protocols), never by name;
    # reasons.py words each source's contribution for readers, so it keys phrases by name.
    from liverec.models import REGISTRY

    named = {f"{p.name}: {s!r}" for p in sorted((SRC / "liverec" / "rank").glob("*.py")) if p.name != "reasons.py"
             for s in _code_strings(p) & set(REGISTRY)}
    assert not named, f"source names in the ranking code: {sorted(named)}"
