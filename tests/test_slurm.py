"""The SLURM path on a real (single-node, localhost) SLURM cluster that the test starts and stops.

Part of `make test` (CI runs as root); `make test-slurm` runs it alone.

Installs Debian's slurm-wlm and munge when missing (CI runs as root), writes a cluster config into
a temporary folder, starts munged, slurmctld and slurmd, runs the tiny workflow with the SLURM
executor and profiles/slurm (GPU requests overridden: the node has no GPU), and stops the daemons
it started by their process ids.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT, REPO, TINY, snakemake, snakemake_command

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_RULES = (
    "pretrain_base",
    "train_lora",
    "generate_shard",
    "generate_guided_shard",
    "train_classifier",
    "train_judge",
    "filter_shards",
    "realism",
)
# The shipped groups (generation, evaluation), sized so that each becomes two SLURM jobs on this
# DAG: the SLURM plugin runs a group job's components one after the other (`--jobs 1`).
TEST_GROUP_COMPONENTS = {"generation": 3, "evaluation": 3}
# Over the tiny config, what every rule still needs: one adjective (6 shards, not 12) and no unseen
# set (one test set per evaluation, one phantom). Every job it keeps is a job of the tiny run with
# the same seeds, so its outputs must equal that run's byte for byte.
SLURM_OVERLAY = {"generation": {"adjectives": ["bright"]}, "unseen": []}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_slurm_installed() -> None:
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    if os.geteuid() != 0:
        pytest.skip("slurm-wlm and munge are not installed and installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], check=True, env=env, capture_output=True)


# Debian's SLURM clients read /etc/slurm/slurm.conf, and job steps started inside a SLURM job
# (the plugin's jobstep executor runs `srun`) do not see our SLURM_CONF, so the test cluster's
# configuration must also be there. The marker lets a later run replace a copy a killed run left.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by meddap tests/test_slurm.py"


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM cluster; yields the environment that talks to it."""
    ensure_slurm_installed()
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text(errors="replace"):
        pytest.fail(f"{SYSTEM_CONF} belongs to a real SLURM installation; run this test on a machine without one")
    if os.geteuid() != 0:
        pytest.skip(f"the test cluster needs root to write {SYSTEM_CONF} and run slurmd")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "logs"):
        (root / sub).mkdir()
    (root / "munge.key").write_bytes(os.urandom(1024))
    (root / "munge.key").chmod(0o400)
    host = socket.gethostname().split(".")[0]
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                MARKER,
                "ClusterName=meddaptest",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"AuthInfo=socket={root}/munge.socket",
                "CredType=cred/munge",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/logs/slurmctld.log",
                f"SlurmdLogFile={root}/logs/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "MpiDefault=none",
                "ReturnToService=2",
                "MinJobAge=3600",  # keep finished jobs visible to squeue (no accounting database)
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SchedulerType=sched/backfill",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(conf, SYSTEM_CONF)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    commands = [
        [
            "munged",
            "--foreground",
            "--force",
            f"--socket={root}/munge.socket",
            f"--key-file={root}/munge.key",
            f"--log-file={root}/logs/munged.log",
            f"--pid-file={root}/munged.pid",
            f"--seed-file={root}/munged.seed",
        ],
        ["slurmctld", "-D", "-f", str(conf)],
        ["slurmd", "-D", "-f", str(conf)],
    ]
    daemons = []
    try:
        for command in commands:
            log = open(root / "logs" / f"{command[0]}.out", "w")
            daemons.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(1.5)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                break
            time.sleep(1)
        else:
            raise AssertionError(f"the test SLURM node did not become idle:\n{daemon_logs(root)}")
        yield env
    finally:
        # Cancel what is still queued or running first: job steps outlive a stopped slurmd.
        subprocess.run(["scancel", "--partition=debug"], env=env, capture_output=True)
        deadline = time.time() + 30
        while time.time() < deadline and daemons and daemons[-1].poll() is None:
            queue = subprocess.run(["squeue", "-h", "-t", "PD,R,CG"], env=env, capture_output=True, text=True)
            if queue.returncode != 0 or not queue.stdout.strip():
                break
            time.sleep(1)
        for daemon in reversed(daemons):  # stop exactly what we started, by process id
            if daemon.poll() is None:
                os.kill(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(daemon.pid, signal.SIGKILL)
                    daemon.wait()
        if SYSTEM_CONF.exists() and MARKER in SYSTEM_CONF.read_text(errors="replace"):
            SYSTEM_CONF.unlink()


def daemon_logs(root: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted((root / "logs").iterdir()))


def write_profile(folder: Path, *, gpus: bool) -> Path:
    """profiles/slurm with the site placeholders filled for the one-node test cluster."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"].pop("slurm_account")
    profile["slurm-no-account"] = True
    profile["slurm-status-command"] = "squeue"  # no accounting database on the test cluster
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["slurm-keep-successful-logs"] = True
    profile["latency-wait"] = 10
    profile["retries"] = 0
    # A group job asks for `cores` CPUs but runs its members one at a time: with 1, two group jobs
    # share the 2-CPU test node instead of queueing behind each other.
    profile["cores"] = 1
    # The node has os.cpu_count() CPUs: CPUs follow each rule's own threads, as in a local run,
    # so that results can be compared byte for byte with one.
    profile.pop("set-threads")
    profile["default-resources"].pop("cpus_per_task")
    profile["default-resources"].update(slurm_partition="debug", mem_mb=1000, runtime=30)
    for rule, resources in profile["set-resources"].items():
        resources.pop("cpus_per_task", None)
        resources.update(slurm_partition="debug", mem_mb=1000, runtime=30)
        if rule in GPU_RULES and not gpus:
            resources["gpu"] = 0  # the test node has no GPU
    profile["group-components"] = {**profile.get("group-components", {}), **TEST_GROUP_COMPONENTS}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def slurm_job_ids(log_dir: Path, groups: set[str]) -> dict[str, set[str]]:
    """rule or group name -> SLURM job ids, read from the log files SLURM wrote.

    The plugin writes rule_<rule>/<wildcards>/<jobid>.log and group_<group>_<its rules>/<jobid>.log.
    """
    ids: dict[str, set[str]] = {}
    for log in log_dir.rglob("*.log"):
        kind, _, name = log.relative_to(log_dir).parts[0].partition("_")
        assert kind in ("rule", "group"), log
        if kind == "group":
            matches = [group for group in groups if name == group or name.startswith(group + "_")]
            assert len(matches) == 1, (log, sorted(groups))
            name = matches[0]
        assert re.fullmatch(r"\d+", log.stem), log  # SLURM replaced %j by the job id
        assert log.stat().st_size > 0, log
        ids.setdefault(name, set()).add(log.stem)
    return ids


def snakemake_cmd(workdir: Path, *overlays: Path) -> list[str]:
    return snakemake_command(workdir, configs=(DEFAULT, TINY, *overlays))


@pytest.mark.slow
def test_every_rule_runs_as_a_slurm_job_and_matches_a_local_run(slurm_cluster, request, tmp_path):
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    profile = write_profile(tmp_path / "profile", gpus=False)
    overlay = tmp_path / "slurm_overlay.yaml"
    overlay.write_text(yaml.safe_dump(SLURM_OVERLAY))
    result = subprocess.run(
        [
            *snakemake_cmd(workdir, overlay),
            "--workflow-profile",
            str(profile),
            "--slurm-logdir",
            str(workdir / "slurm-logs"),
        ],
        cwd=workdir,
        env=slurm_cluster,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    group_of = yaml.safe_load(PROFILE.read_text())["groups"]
    ids = slurm_job_ids(workdir / "slurm-logs", set(group_of.values()))
    rules = {
        "simulate_phantom",
        "simulate_pretrain_corpus",
        "split",
        "pretrain_base",
        "train_lora",
        "generate_shard",
        "augment_classic",
        "merge_dataset",
        "train_classifier",
        "evaluate",
        "index_test_set",
        "index_synthetic",
        "synthetic_quality",
        "realism",
        "audit",
        "report",
    }
    for rule in rules:  # each rule ran in a SLURM job of its own or of its group
        assert group_of.get(rule, rule) in ids, (rule, sorted(ids))
    # The shipped profile's grouping pays: several shards (and evaluations) per SLURM job.
    shards = len(list((workdir / "results" / "synthetic").glob("*/*/*/shard*/metadata.csv")))
    evaluations = len(list((workdir / "results" / "evaluation").glob("*/*/fold*/rep*/robustness.csv")))
    assert 0 < len(ids["generation"]) < shards, (ids["generation"], shards)
    assert 0 < len(ids["evaluation"]) < evaluations, (ids["evaluation"], evaluations)
    all_ids = [job_id for job_ids in ids.values() for job_id in job_ids]
    assert len(all_ids) == len(set(all_ids))  # one SLURM job per log
    # The local run is asked for only now: under xdist another worker runs it while SLURM works.
    tiny_run = request.getfixturevalue("tiny_run")
    for relative in (
        "results/splits/manifest.csv",
        "results/datasets/bright_x1/fold0.csv",
        "results/datasets/classic_x1/fold1.csv",
        "results/evaluation/bright_x1/squeezenet1_1/fold1/rep0/robustness.csv",
    ):
        assert (workdir / relative).read_bytes() == (tiny_run / relative).read_bytes(), relative
    # Every classifier's metrics on the test split, line for line as in the tiny run's table.
    header, *cluster_rows = (workdir / "results" / "report" / "metrics.csv").read_text().splitlines()
    local_rows = set((tiny_run / "results" / "report" / "metrics.csv").read_text().splitlines())
    assert header in local_rows and cluster_rows
    assert {row.split(",")[0] for row in cluster_rows} == {"original", "bright_x1", "classic_x1"}
    assert all(",test,internal," in row for row in cluster_rows), cluster_rows[:3]
    assert [row for row in cluster_rows if row not in local_rows] == []


@pytest.mark.slow
def test_real_profile_asks_for_one_gpu_on_gpu_rules(slurm_cluster, tmp_path):
    """The shipped profile's GPU rules submit with --gpus=1 (seen in the plugin's sbatch call)."""
    profile = write_profile(tmp_path / "real", gpus=True)
    workdir = tmp_path / "gpu"
    workdir.mkdir()
    # Build the inputs of pretrain_base locally, then hand pretrain_base alone to SLURM. The node
    # has no GPU, so SLURM refuses the job at submission; the sbatch call is what this test reads.
    snakemake(
        workdir,
        "--cores",
        "2",
        "results/splits/manifest.csv",
        "resources/phantom/pretrain-corpus",
        "results/test_sets/linear-L7.csv",
        "results/test_sets/convex-C5.csv",
    )
    result = subprocess.run(
        [
            *snakemake_cmd(workdir),
            "--workflow-profile",
            str(profile),
            "--verbose",
            "--slurm-logdir",
            str(workdir / "slurm-logs"),
            "results/base_model",
        ],
        cwd=workdir,
        env=slurm_cluster,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    calls = [line for line in output.splitlines() if "sbatch call: sbatch " in line]
    assert calls, output[-4000:]
    assert all("--gpus=1" in call for call in calls), calls
    assert all("rule_pretrain_base" in call for call in calls), calls
