"""The code base passes the linters `make lint` runs: ruff (lint and format) on the Python,
snakefmt on the Snakefile and rules, snakemake --lint, and lint-imports (the layer contracts in
pyproject.toml). Beside them: no import cycle among meddap's modules, and no module over
MAX_MODULE_LINES lines. A test skips only when its tool is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT, REPO

PYTHON_PATHS = ["src", "workflow/scripts", "tests"]
MAX_MODULE_LINES = 500


def tool(name: str) -> str:
    """The tool beside this Python (the project's environment), else on PATH; skip when missing."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def run(*command: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)


def test_ruff_check():
    result = run(tool("ruff"), "check", *PYTHON_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = run(tool("ruff"), "format", "--check", *PYTHON_PATHS)
    assert result.returncode == 0, f"run `ruff format {' '.join(PYTHON_PATHS)}`:\n{result.stdout}{result.stderr}"


def test_snakefmt():
    result = run(tool("snakefmt"), "--check", "Snakefile", "workflow")
    assert result.returncode == 0, f"run `snakefmt Snakefile workflow`:\n{result.stdout}{result.stderr}"


def test_snakemake_lint(tmp_path):
    # In an empty working directory, so the parse writes nothing into the repository.
    result = run(
        tool("snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(DEFAULT), "--lint", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_import_layers():
    # meddap from this checkout's src, whatever the environment's install points at; --no-cache
    # writes no .import_linter_cache into the repository.
    pythonpath = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    result = run(tool("lint-imports"), "--no-cache", env={**os.environ, "PYTHONPATH": pythonpath})
    assert result.returncode == 0, f"an import breaks [tool.importlinter] in pyproject.toml:\n{result.stdout}"


def import_cycles(graph) -> list[tuple[str, ...]]:
    """The import cycles of a grimp graph, one per set of modules: each import a -> b that a chain
    b -> ... -> a closes, as (a, b, ..., a)."""
    cycles: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = (imported,) if imported == importer else graph.find_shortest_chain(imported, importer)
            if back:
                cycles.setdefault(frozenset(back), (importer, *back))
    return sorted(cycles.values())


def test_no_import_cycles():
    # Every module, package __init__s included (lint-imports' acyclic_siblings contract misses a
    # cycle through a package's own __init__); imports inside functions and under TYPE_CHECKING count.
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("meddap", cache_dir=None)

    def step(importer: str, imported: str) -> str:
        lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
        return f"{importer} -> {imported} (l.{', '.join(map(str, lines))})"

    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + "; ".join(step(a, b) for a, b in zip(cycle, cycle[1:])) for cycle in cycles
    )


def test_module_size():
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((REPO / "src" / "meddap").rglob("*.py"))
    }
    over = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): " + ", ".join(
        f"{path} ({lines})" for path, lines in over.items()
    )
