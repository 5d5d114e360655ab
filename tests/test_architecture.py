"""The package layout holds: one installed name, imports one way, no private helper across packages."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package it is installed as (pyproject's [tool.setuptools.package-dir])
PACKAGES = {
    "pipeline": "edgekd.pipeline",
    "export": "edgekd.export",
    "benchmarks": "edgekd.benchmarks",
    "android_demo/installer": "edgekd.android",
    "edgekd": "edgekd",
}


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "lint_imports.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contract_is_kept():
    p = _lint(ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout


@pytest.mark.parametrize(
    "lower,upper",
    [
        ("pipeline", "edgekd.export.formats"),
        ("export", "edgekd.benchmarks.stats"),
        ("android_demo/installer", "edgekd.benchmarks.stats"),
        ("benchmarks", "edgekd.android.install"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, lower, upper):
    """The check can fail: a copy of the tree with one upward (here lazy, inside a function) import is refused."""
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "build"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / lower / "sneaky.py").write_text(f"def f():\n    import {upper}\n")
    p = _lint(tmp_path)
    assert p.returncode != 0, p.stdout[-2000:]
    assert "BROKEN" in p.stdout and "sneaky" in p.stdout


def _modules():
    for folder, package in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            yield package, f


def _package_of(module: str) -> str:
    parts = module.split(".")
    return (
        ".".join(parts[:2])
        if len(parts) > 1 and parts[1] in {"pipeline", "export", "benchmarks", "android"}
        else "edgekd"
    )


def test_no_private_name_crosses_a_package():
    """`from edgekd.X.m import _helper` or `m._helper` on a module of another package is a hidden dependency."""
    offences = []
    for package, f in _modules():
        tree = ast.parse(f.read_text(), str(f))
        foreign_aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgekd"):
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    if _package_of(target if a.name[0].islower() else node.module) != package:
                        if a.name.startswith("_") and not a.name.startswith("__"):
                            offences.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}")
                        else:
                            foreign_aliases[a.asname or a.name] = target
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("edgekd") and _package_of(a.name) != package and a.asname:
                        foreign_aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in foreign_aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offences.append(
                    f"{f.relative_to(ROOT)}:{node.lineno} uses {foreign_aliases[node.value.id]}.{node.attr}"
                )
    assert not offences, "\n".join(offences)


def test_one_installed_name(tmp_path):
    """Outside the checkout, `edgekd` and its subpackages import; generic top-level names do not exist."""
    code = (
        "import importlib, importlib.util\n"
        "import edgekd, edgekd.pipeline.config, edgekd.export.formats, edgekd.benchmarks.stats, edgekd.android\n"
        "print([n for n in ('pipeline', 'export', 'benchmarks', 'installer') if importlib.util.find_spec(n)])\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_stage_table_is_the_config_stage_list():
    from edgekd.pipeline.config import ALL_STAGES, Config
    from edgekd.stage_table import STAGE_GROUPS, STAGES

    assert tuple(s.name for s in STAGES) == ALL_STAGES == tuple(Config().stages)
    assert all(name in ALL_STAGES for group in STAGE_GROUPS.values() for name in group)
