"""meddap outside its own clone: deployed with snakedeploy, used as a Snakemake ``module`` of another
Snakefile, and the parse-time check that the meddap package the jobs import is the workflow's version.

The rule scripts import meddap from the installed package (``meddap.runtime.rulescript``); nothing puts the
repository's src/ on sys.path. These runs get the package from the test's environment (the venv's
installation, or PYTHONPATH in a development checkout), as a user's environment would have it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT, REPO, SNAKEMAKE, TINY

SNAKEDEPLOY = str(Path(sys.executable).with_name("snakedeploy"))

# The tiny test config, reduced further for these two runs (both must finish within minutes; 35 jobs
# instead of 79): no unseen set, one LoRA (shared by the classes, one arm for both folds), the
# `mixed` family only, one corruption at one severity.
REDUCED = {
    "unseen": [],
    "lora": {"scope": "split", "mode": "shared"},
    "generation": {"variant_families": ["mixed"]},
    "evaluation": {"corruptions": ["speckle_noise"], "severities": [1], "bootstrap": 100},
}


def merged(*layers: dict) -> dict:
    def merge(base: dict, layer: dict) -> dict:
        out = dict(base)
        for key, value in layer.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    result: dict = {}
    for layer in layers:
        result = merge(result, layer)
    return result


def tiny_config() -> dict:
    """One whole config: the embedded default, the tiny overlay and the reductions above."""
    return merged(yaml.safe_load(DEFAULT.read_text()), yaml.safe_load(TINY.read_text()), REDUCED)


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def assert_report(workdir: Path) -> None:
    for name in ("summary.md", "index.html", "metrics.csv"):
        assert (workdir / "results" / "report" / name).is_file(), name
    assert (workdir / "results" / "audit" / "verdict.txt").is_file()


def test_env_file_installs_the_workflows_meddap():
    """workflow/envs/meddap.yaml installs meddap from the repository (../.. of the env file) and
    names the version, so a version bump changes the file and so Snakemake's environment hash."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    env_file = REPO / "workflow" / "envs" / "meddap.yaml"
    env = yaml.safe_load(env_file.read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert "../.." in pip
    assert (env_file.parent / "../.." / "pyproject.toml").resolve() == REPO / "pyproject.toml"
    assert f"# meddap version: {version}\n" in env_file.read_text()
    import meddap

    assert meddap.__version__ == version


def test_no_script_reaches_for_src_or_a_helper_beside_it():
    scripts = REPO / "workflow" / "scripts"
    assert not (scripts / "_meddap_script.py").exists()
    for script in scripts.glob("*.py"):
        text = script.read_text()
        assert "from meddap.runtime.rulescript import start" in text, script.name
        assert "sys.path" not in text, script.name
    for rules in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        assert "sys.path" not in rules.read_text(), rules.name


def test_wrong_meddap_version_stops_the_parse_with_one_line(tmp_path):
    """Another meddap first on the path: the workflow refuses to parse and says what to install."""
    fake = tmp_path / "fake" / "meddap"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.0.0-other"\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "-n"],  # the embedded default, found beside it
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "needs the meddap package" in line]
    assert len(lines) == 1, result.stdout + result.stderr
    assert "found meddap 0.0.0-other" in lines[0]
    assert f"pip install '{REPO}'" in lines[0]


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=meddap-test", "-c", "user.email=test@meddap", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def local_clone(tmp_path: Path) -> Path:
    """A clone of this repository with the working tree's current files committed and tagged."""
    clone = tmp_path / "meddap-repo"
    git("clone", "--quiet", "--no-hardlinks", str(REPO), str(clone), cwd=tmp_path)
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source, target = REPO / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():  # deleted in the working tree
            target.unlink()
    git("add", "-A", cwd=clone)
    git("commit", "--quiet", "--allow-empty", "-m", "test snapshot", cwd=clone)
    version = tomllib.loads((clone / "pyproject.toml").read_text())["project"]["version"]
    git("tag", f"v{version}", cwd=clone)
    return clone


@pytest.mark.slow
def test_snakedeploy_deployment_runs(tmp_path):
    """snakedeploy deploy-workflow from a local clone into an empty folder, tiny config, full run.

    snakedeploy's local provider copies the clone (it checks nothing out: the clone's HEAD is the
    tagged snapshot) and writes workflow/Snakefile with `module meddap: snakefile: "Snakefile"`, a
    path relative to the deployed workflow/Snakefile, i.e. itself. The one adaptation: that path
    becomes the clone's Snakefile (a GitHub deployment writes `github(..., tag=...)` instead).
    """
    if not Path(SNAKEDEPLOY).exists():
        pytest.skip("snakedeploy is not installed (pip install -e .[dev])")
    clone = local_clone(tmp_path)
    dest = tmp_path / "deployed"
    dest.mkdir()
    run([SNAKEDEPLOY, "deploy-workflow", str(clone), str(dest), "--name", "meddap", "--tag", "v0.1.0"], cwd=tmp_path)
    deployed = dest / "workflow" / "Snakefile"
    text = deployed.read_text()
    assert 'configfile: "config/config.yaml"' in text and "use rule * from meddap" in text
    assert '"Snakefile"' in text, text
    deployed.write_text(text.replace('"Snakefile"', f'"{clone / "Snakefile"}"'))
    # The deployed config/ is the repository's; edit it to the tiny test settings.
    assert (dest / "config" / "config.yaml").read_text() == DEFAULT.read_text()
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    run([SNAKEMAKE, "--cores", "2"], cwd=dest)
    assert_report(dest)


@pytest.mark.slow
def test_meddap_as_a_module_of_another_snakefile(tmp_path):
    """A separate Snakefile in another folder, its own config, `use rule * from meddap`."""
    work = tmp_path / "study"
    work.mkdir()
    (work / "study.yaml").write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    (work / "Snakefile").write_text(
        'configfile: "study.yaml"\n\n\n'
        "module meddap:\n"
        f'    snakefile:\n        "{REPO / "Snakefile"}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from meddap\n"
    )
    run([SNAKEMAKE, "--cores", "2"], cwd=work)
    assert_report(work)
