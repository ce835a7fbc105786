"""bench/gpu_dag.sh (the GPU path of the DAG, fold 0) and the per-rule table it writes."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from meddap.bench.dag import main, markdown, summarize_benchmarks

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_benchmark(path: Path, *seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s}\t0:00:01\t1\t1\t1\t1\t0\t0\t0\t{s}\n" for s in seconds)
    path.write_text(BENCH_HEADER + rows)


def test_summary_per_rule_jobs_total_median(tmp_path):
    root = tmp_path / "benchmarks"
    write_benchmark(root / "split.tsv", 2.0)
    write_benchmark(root / "generate_shard" / "fold0" / "benign" / "none" / "shard000.tsv", 10.0)
    write_benchmark(root / "generate_shard" / "fold0" / "benign" / "none" / "shard001.tsv", 30.0)
    write_benchmark(root / "generate_shard" / "fold0" / "normal" / "none" / "shard000.tsv", 11.0)
    write_benchmark(root / "train_lora" / "fold0" / "benign.tsv", 4.0, 6.0)  # repeat(): the mean
    frame = summarize_benchmarks(root)
    assert list(frame["rule"]) == ["generate_shard", "train_lora", "split"]  # largest total first
    shards = frame.set_index("rule").loc["generate_shard"]
    assert (shards["jobs"], shards["total_s"], shards["median_s"], shards["max_s"]) == (3, 51.0, 11.0, 30.0)
    assert frame.set_index("rule").loc["train_lora", "total_s"] == 5.0
    assert markdown(frame).splitlines()[-1] == "| total | 5 | 58.0 | | |"
    out = tmp_path / "out"
    assert main([str(root), str(out)]) == 0
    assert pd.read_csv(out / "rules.csv").equals(frame)


def test_summary_refuses_what_is_not_a_benchmark(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.tsv").write_text("seconds\n1\n")
    with pytest.raises(ValueError, match="no 's' column"):
        summarize_benchmarks(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        summarize_benchmarks(tmp_path / "missing")


def test_gpu_overlay_plans_fold_zero_of_busi(tmp_path, busi_root):
    """The GPU run's configs resolve, and --until fold 0 plans one LoRA per class and fold 0's classifiers."""
    from test_cost_plan import dry_run_jobs, fake_sd_folder

    paths = tmp_path / "paths.yaml"
    model = fake_sd_folder(tmp_path / "sd")
    paths.write_text(yaml.safe_dump({"dataset": {"root": str(busi_root)}, "base_model": {"path": str(model)}}))
    overlay = yaml.safe_load((REPO / "bench" / "gpu_dag.yaml").read_text())
    assert overlay["generation"]["adjectives"] == ["none", "bright"] and overlay["generation"]["ratios"] == [1]
    configs = (REPO / "config" / "busi.yaml", REPO / "bench" / "gpu_dag.yaml", paths)
    variants = ["original", "none_x1", "bright_x1", "mixed_x1", "classic_x1"]
    targets = [f"results/evaluation/{v}/resnet34/fold0/rep0" for v in variants]
    workdir = tmp_path / "run"
    workdir.mkdir()
    jobs = dry_run_jobs(workdir, configs, "--until", *targets)
    assert jobs["train_lora"] == 3 and jobs["train_classifier"] == 5 and jobs["evaluate"] == 5
    assert jobs["generate_shard"] == jobs["check_generation_inputs"] >= 2 * 3


@pytest.mark.slow
def test_tiny_dag_script_writes_the_per_rule_table(tmp_path):
    """TINY=1: the script's CPU mode (phantom, embedded small model) through the workstation profile."""
    out = tmp_path / "out"
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "WORKDIR": str(tmp_path / "run")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    script = str(REPO / "bench" / "gpu_dag.sh")
    result = subprocess.run(["bash", script, str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out / "rules.csv").set_index("rule")
    # Fold 0 only: 2 variants (original, none_x1), one shared LoRA, one shard per class.
    expected = {"pretrain_base": 1, "train_lora": 1, "generate_shard": 3, "train_classifier": 2, "evaluate": 2}
    assert {rule: int(table.loc[rule, "jobs"]) for rule in expected} == expected
    assert (table["total_s"] > 0).all()
    assert "jobs per rule" in (out / "plan.txt").read_text()
    assert len(list((tmp_path / "run" / "results" / "evaluation").rglob("metrics.json"))) >= 2
