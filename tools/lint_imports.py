"""Check the layer contract ([tool.importlinter] in pyproject.toml) with import-linter.

The installed package `edgekd` is assembled from several top-level folders (pyproject's
[tool.setuptools.package-dir]), and import-linter finds modules by walking one package folder. So this
script lays out that mapping as a folder of symlinks in a temporary directory, puts it first on sys.path
and runs `lint-imports` there. Exit code: import-linter's (0 = every contract kept).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_view(dest: Path, root: Path = ROOT) -> Path:
    """dest/edgekd/... mirroring the installed package, each subpackage a symlink to its source folder."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*name.split("."))
        if name.count(".") == 0:  # the top package: its own files, not a link (its children are links)
            target.mkdir(parents=True)
            for f in (root / folder).glob("*.py"):
                os.symlink(f, target / f.name)
        else:
            os.symlink(root / folder, target, target_is_directory=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    import argparse

    from importlinter.cli import lint_imports

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="source tree to check (default: this checkout)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="edgekd-lint-") as tmp:
        package_view(Path(tmp), root)
        sys.path.insert(0, tmp)
        os.chdir(tmp)  # lint-imports puts the working directory first on sys.path: there `edgekd` is the view
        return lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
