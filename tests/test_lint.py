"""The code base passes the linters `make lint` runs: ruff (lint and format) on the Python,
snakefmt on the Snakefile and rules, and snakemake --lint. A test skips only when its tool is
not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT, REPO

PYTHON_PATHS = ["src", "workflow/scripts", "tests"]


def tool(name: str) -> str:
    """The tool beside this Python (the project's environment), else on PATH; skip when missing."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


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
