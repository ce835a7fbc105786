"""Warm start (meddap.runtime.warm): who runs warm, which server a job may use, and a real server
running jobs with their streams, folder, environment and exit status, and dying with them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from meddap.runtime import warm

CLIENT = textwrap.dedent(
    """
    import os, sys
    from meddap.runtime import warm
    status = warm.run_in_server(sys.argv[1:], dict(os.environ), os.getcwd())
    sys.exit(100 if status is None else status)
    """
)


def test_eligible_names_why_a_job_runs_cold(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("")
    assert warm.eligible({}, False, str(script)) is None
    assert warm.eligible({"MEDDAP_WARM": "0"}, False, str(script)) == "MEDDAP_WARM=0"
    assert warm.eligible({"SLURM_JOB_ID": "7"}, False, str(script)) == "inside a cluster allocation"
    assert warm.eligible({"JOB_ID": "7", "SGE_ROOT": "/sge"}, False, str(script)) == "inside a cluster allocation"
    assert warm.eligible({"JOB_ID": "7"}, False, str(script)) is None  # JOB_ID alone is not SGE's
    assert warm.eligible({}, True, str(script)) == "the job takes a GPU device"
    assert warm.eligible({warm.CHILD_VARIABLE: "1"}, False, str(script)) == "already in a warm server's fork"
    assert warm.eligible({}, False, "-c").startswith("not started from a script file")


def test_server_key_ignores_the_per_job_variables_and_nothing_else(tmp_path):
    base = {"PATH": "/usr/bin", "HF_HUB_OFFLINE": "1"}
    key = warm.server_key(base, str(tmp_path))
    assert warm.server_key({**base, "OMP_NUM_THREADS": "2", "TMPDIR": "/tmp/x"}, str(tmp_path)) == key
    assert warm.server_key({**base, "HF_HUB_OFFLINE": "0"}, str(tmp_path)) != key  # read when diffusers loads
    assert warm.server_key(base, str(tmp_path / "other")) != key  # one server per workflow folder


@pytest.fixture
def warm_dir(tmp_path, monkeypatch):
    folder = tmp_path / "w"  # short: a Unix socket's path has at most 107 characters
    monkeypatch.setenv(warm.DIR_VARIABLE, str(folder))
    yield folder
    warm.stop_servers(None, {warm.DIR_VARIABLE: str(folder)})


def run_client(script: Path, cwd: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLIENT, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


def test_a_job_runs_in_a_fork_with_its_streams_folder_environment_and_status(tmp_path, warm_dir):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from pathlib import Path
            print("out:", os.environ["JOB_SETTING"], os.environ.get("OMP_NUM_THREADS"), sys.argv[1:])
            print("err: torch preloaded" if "torch" in sys.modules else "err: cold", file=sys.stderr)
            Path("written.txt").write_text(str(os.getpid()))
            sys.exit(int(sys.argv[1]))
            """
        )
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    first = run_client(script, workdir, "3", JOB_SETTING="a", OMP_NUM_THREADS="1")
    assert first.returncode == 3, first.stderr
    assert first.stdout.strip() == "out: a 1 ['3']"
    assert "err: torch preloaded" in first.stderr  # the fork inherited the server's imports
    job_pid = int((workdir / "written.txt").read_text())
    assert job_pid != os.getpid()
    # A second job reuses the server (a per-job thread count does not split servers), in a new fork
    # that sees the job's own environment.
    second = run_client(script, workdir, "0", JOB_SETTING="a", OMP_NUM_THREADS="2")
    assert second.returncode == 0 and second.stdout.strip() == "out: a 2 ['0']"
    assert int((workdir / "written.txt").read_text()) != job_pid
    records = list(warm_dir.glob("*.json"))
    assert len(records) == 1  # one server for both jobs
    stopped = warm.stop_servers(str(workdir))
    assert len(stopped) == 1
    deadline = time.monotonic() + 30
    while any(warm_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(warm_dir.iterdir()), "the stopped server left its socket, record, lock or log"


def test_an_exception_fails_the_job_with_its_traceback(tmp_path, warm_dir):
    script = tmp_path / "job.py"
    script.write_text("raise ValueError('bad input: the key dataset.root')\n")
    result = run_client(script, tmp_path)
    assert result.returncode == 1
    assert "ValueError: bad input: the key dataset.root" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_waiting_job_kills_its_fork(tmp_path, warm_dir, signum):
    script = tmp_path / "job.py"
    script.write_text("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(script)], cwd=tmp_path)
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 300
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    fork = int(pid_file.read_text())
    # SIGTERM as Snakemake stops a job: forwarded to the fork; SIGKILL: the fork sees its job gone
    client.send_signal(signum)
    assert client.wait(timeout=30) != 0
    deadline = time.monotonic() + 30
    while _alive(fork) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(fork)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie until the server reaps it: dead all the same
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_folder_others_can_write_to_turns_warm_start_off(tmp_path, warm_dir):
    """The folder's name is predictable: a job never hands its environment and streams to a socket
    in a folder that another user could have made or could write to."""
    warm_dir.mkdir(mode=0o700)
    warm_dir.chmod(0o777)
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    result = run_client(script, tmp_path)
    assert result.returncode == 100  # run_in_server gave None: the job runs cold
    assert "warm start off" in result.stderr and str(warm_dir) in result.stderr
    assert not list(warm_dir.iterdir())  # no server was started
