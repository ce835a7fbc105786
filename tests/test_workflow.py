"""The DAG itself: dry run, lint, formatting, an end-to-end run on the tiny config, reruns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEFAULT, REPO, SNAKEMAKE, TINY, planned_jobs, snakemake

from meddap.runtime.seeding import classifier_seed

ALL_RULES = {
    "simulate_phantom",
    "simulate_pretrain_corpus",
    "split",
    "augment_classic",
    "pretrain_base",
    "train_lora",
    "generate_shard",
    "generate_guided_shard",
    "check_generation_inputs",
    "train_judge",
    "filter_shards",
    "merge_dataset",
    "train_classifier",
    "evaluate",
    "index_test_set",
    "index_synthetic",
    "synthetic_quality",
    "realism",
    "audit",
    "report",
    "all",
}


def test_dry_run_of_the_default_config_lists_every_rule(tmp_path):
    result = snakemake(tmp_path, "-n", configs=(DEFAULT,))
    jobs = planned_jobs(result.stdout + result.stderr)
    config = yaml.safe_load(DEFAULT.read_text())
    folds, n_arch = config["dataset"]["folds"], len(config["classifier"]["architectures"])
    generation = config["generation"]
    families, n_adjectives = generation["variant_families"], len(generation["adjectives"])
    # augment_classic runs only for the classic family (the tiny config, which has it, runs it end to end),
    # generate_guided_shard only for the guided one, the filter's rules only with generation.filter
    optional = {"augment_classic": "classic", "generate_guided_shard": "guided"}
    filtering = generation.get("filter", {}).get("enabled", False)
    absent = {rule for rule, family in optional.items() if family not in families}
    absent |= set() if filtering else {"train_judge", "filter_shards"}
    assert set(jobs) == ALL_RULES - absent
    per_ratio = (
        n_adjectives * ("adjective" in families)
        + ("mixed" in families and n_adjectives > 1)
        + ("guided" in families)
        + ("classic" in families)
    )
    twins = (
        ("adjective" in families) * n_adjectives + ("mixed" in families and n_adjectives > 1) + ("guided" in families)
    )
    n_variants = 1 + (per_ratio + filtering * twins) * len(generation["ratios"])
    assert jobs["train_classifier"] == n_variants * n_arch * folds
    # lora.scope: fold -> one generative arm (LoRAs and shards) per fold
    assert config["lora"]["scope"] == "fold"
    assert jobs["train_lora"] == len(config["dataset"]["classes"]) * folds
    # one per shard of each stream, before it
    assert jobs["check_generation_inputs"] == jobs["generate_shard"] + jobs.get("generate_guided_shard", 0)
    assert jobs["index_synthetic"] == folds
    assert jobs["merge_dataset"] == n_variants * folds
    assert jobs["simulate_phantom"] == 3
    assert jobs["evaluate"] == n_variants * n_arch * folds  # one job per classifier: every test set + robustness
    assert jobs["synthetic_quality"] == n_arch
    assert jobs["realism"] == 1  # every arm, class and architecture's judges in one job
    assert jobs.get("augment_classic", 0) == (folds if "classic" in families else 0)


def test_lint_is_clean_and_snakefmt_passes(tmp_path):
    lint = subprocess.run([SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations, your workflow is in a good condition" in lint.stdout + lint.stderr
    fmt = subprocess.run(
        [str(Path(sys.executable).with_name("snakefmt")), "--check", "Snakefile", "workflow/rules"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_package_and_scripts_pass_ruff():
    """No line over 120 characters, no unused import or undefined name, formatted (pyproject's ruff config)."""
    ruff = str(Path(sys.executable).with_name("ruff"))
    for command in ([ruff, "check", "src", "workflow/scripts"], [ruff, "format", "--check", "src", "workflow/scripts"]):
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stdout + result.stderr


def test_missing_dataset_root_stops_at_once_naming_the_path(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "phantom": {"enabled": False},
                "dataset": {"root": str(tmp_path / "no-such-folder")},
                "base_model": {"pretrain": {"corpus": "dataset"}},
            }
        )
    )
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    assert result.returncode != 0
    assert "no-such-folder" in result.stdout + result.stderr


@pytest.mark.slow
def test_end_to_end_outputs(tiny_run):
    results = tiny_run / "results"
    manifest = pd.read_csv(results / "splits" / "manifest.csv")
    assert set(manifest["split"]) == {"train", "test"}
    # The base model loads exactly as a downloaded SD v1.x folder would.
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        results / "base_model", safety_checker=None, requires_safety_checker=False
    )
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.text_encoder).__name__ == "CLIPTextModel"
    # The base model never saw a dataset image: it pretrained on a separate, captioned corpus.
    corpus = pd.read_csv(results / "base_model" / "pretraining_corpus.csv")
    assert corpus["path"].str.startswith("resources/phantom/pretrain-corpus/").all()
    # Captions teach the workflow's adjectives: about half the corpus is brightened and called bright.
    assert set(corpus["adjective"]) == {"none", "bright"} and corpus["caption"].str.contains("bright ultrasound").any()
    assert abs((corpus["adjective"] == "bright").mean() - 0.5) < 0.1
    base_lineage = json.loads((results / "base_model" / "lineage.json").read_text())
    assert {e["path"] for e in base_lineage["images"]} == set(corpus["path"])
    assert not {e["path"] for e in base_lineage["images"]} & set(manifest["path"])
    for fold in (0, 1):
        fold_training = manifest[(manifest["split"] == "train") & (manifest["fold"] != fold)]
        for cls in ("benign", "malignant", "normal"):
            lora = results / "lora" / f"fold{fold}" / cls
            assert (lora / "pytorch_lora_weights.safetensors").is_file()
            log = (results / "logs" / "train_lora" / f"fold{fold}" / f"{cls}.log").read_text()
            assert re.search(r"trainable parameters: \d+ \(\d+\.\d+% of the UNet\)", log)
            # Each fold's LoRA learnt from exactly the originals that fold's classifiers train on.
            lineage = json.loads((lora / "lineage.json").read_text())
            assert {e["path"] for e in lineage["images"]} == set(
                fold_training.loc[fold_training["class"] == cls, "path"]
            )
    metadata = pd.read_csv(results / "synthetic" / "fold0" / "benign" / "bright" / "shard000" / "metadata.csv")
    assert list(metadata.columns[:5]) == ["file", "class", "adjective", "prompt", "seed"]
    assert (metadata["prompt"] == "a bright ultrasound photo of benign tumor in breast").all()
    test_paths = set(manifest.loc[manifest["split"] == "test", "path"])
    for fold_csv in (results / "datasets").glob("*/fold*.csv"):
        rows = pd.read_csv(fold_csv, keep_default_na=False)
        fold = int(fold_csv.stem.removeprefix("fold"))
        assert not rows["path"].isin(test_paths).any()
        validation = rows[rows["role"] == "validation"]
        assert (validation["source"] == "original").all()
        assert set(validation["path"]) == set(
            manifest.loc[(manifest["split"] == "train") & (manifest["fold"] == fold), "path"]
        )
        synthetic = rows[rows["source"] == "synthetic"]
        assert synthetic["derived_from"].str.startswith(f"results/synthetic/fold{fold}/").all(), fold_csv
    # The lineage audit ran and found nothing.
    audit = pd.read_csv(results / "audit" / "summary.csv")
    assert len(audit) == 8 and (audit["status"] == "clean").all() and (audit["influencing_images"] > 0).all()
    assert "Lineage audit: passed" in (results / "report" / "summary.md").read_text()
    model_dir = results / "classifiers" / "classic_x1" / "squeezenet1_1" / "fold1" / "rep0"
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["classes"] == ["benign", "malignant", "normal"] and meta["input_size"] == 32
    # Matched seeds: every variant of (arch, fold, replicate) trained from one seed (meddap.runtime.seeding).
    assert meta["replicate"] == 0 and meta["seed"] == classifier_seed(42, "squeezenet1_1", 1, 0)
    assert (
        json.loads(
            (results / "classifiers" / "original" / "squeezenet1_1" / "fold1" / "rep0" / "model.json").read_text()
        )["seed"]
        == meta["seed"]
    )
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "history.csv").is_file()
    metrics = json.loads(
        (
            results / "evaluation" / "original" / "squeezenet1_1" / "fold0" / "rep0" / "linear-L7" / "metrics.json"
        ).read_text()
    )
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "macro_auroc",
        "sensitivity_malignant",
        "specificity_benign",
        "precision_normal",
    ):
        assert key in metrics
    assert metrics["evaluated"] == {
        "variant": "original",
        "family": "original",
        "adjective": "",
        "ratio": 0.0,
        "filtered": False,
        "arch": "squeezenet1_1",
        "fold": 0,
        "replicate": 0,
        "classifier_seed": classifier_seed(42, "squeezenet1_1", 0, 0),
        "test_set": "linear-L7",
        "test_set_kind": "unseen",
    }
    long = pd.read_csv(results / "report" / "metrics.csv", keep_default_na=False)
    assert list(long.columns) == [
        "variant",
        "family",
        "adjective",
        "ratio",
        "filtered",
        "arch",
        "fold",
        "replicate",
        "test_set",
        "test_set_kind",
        "metric",
        "value",
    ]
    kinds = set(zip(long["test_set"], long["test_set_kind"]))
    assert kinds == {("test", "internal"), ("linear-L7", "unseen"), ("convex-C5", "unseen")}
    assert set(zip(long["variant"], long["family"], long["ratio"])) == {
        ("original", "original", 0.0),
        ("none_x1", "adjective", 1.0),
        ("bright_x1", "adjective", 1.0),
        ("classic_x1", "classic", 1.0),
    }
    assert set(long["test_set"]) == {"test", "linear-L7", "convex-C5"}
    summary = pd.read_csv(results / "report" / "summary.csv")
    assert {"mean", "std", "delta_vs_original", "p_t_vs_original"} <= set(summary.columns)
    fidelity = pd.read_csv(results / "report" / "fidelity.csv")
    assert set(fidelity["class"]) == {"benign", "malignant", "normal"}
    assert "Class fidelity" in (results / "report" / "summary.md").read_text()
    # Nothing half-written anywhere.
    assert not list(tiny_run.rglob("*.partial"))


@pytest.mark.slow
def test_predict_command_round_trip(tiny_run, tmp_path):
    model_dir = tiny_run / "results" / "classifiers" / "original" / "squeezenet1_1" / "fold0" / "rep0"
    images = tiny_run / "resources" / "phantom" / "linear-L7"
    out, metrics_out = tmp_path / "preds.csv", tmp_path / "metrics.json"
    meddap = str(Path(sys.executable).with_name("meddap"))
    result = subprocess.run(
        [
            meddap,
            "predict",
            "--model",
            str(model_dir),
            "--images",
            str(images),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--metrics-out",
            str(metrics_out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "macro-F1" in result.stdout and "sensitivity" in result.stdout  # class subfolders -> a readable table
    assert json.loads(metrics_out.read_text())["ensemble_members"] == 1
    ours = pd.read_csv(out).sort_values("path").reset_index(drop=True)
    workflow = pd.read_csv(
        tiny_run
        / "results"
        / "evaluation"
        / "original"
        / "squeezenet1_1"
        / "fold0"
        / "rep0"
        / "linear-L7"
        / "predictions.csv"
    )
    workflow = workflow.sort_values("path").reset_index(drop=True)
    assert [Path(p).name for p in ours["path"]] == [Path(p).name for p in workflow["path"]]
    assert (ours["predicted"] == workflow["predicted"]).all()
    probabilities = ["prob_benign", "prob_malignant", "prob_normal"]
    assert (ours[probabilities] - workflow[probabilities]).abs().max().max() < 1e-5

    # <variant>/<arch>: the ensemble of the folds (each fold's replicates), its probabilities the mean of its members'.
    ensemble = tmp_path / "ensemble.csv"
    result = subprocess.run(
        [meddap, "predict", "--model", str(model_dir.parent.parent), "--images", str(images), "--out", str(ensemble)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    both = pd.read_csv(ensemble).sort_values("path").reset_index(drop=True)
    assert (both["ensemble_members"] == 2).all()
    member1 = pd.read_csv(
        tiny_run
        / "results"
        / "evaluation"
        / "original"
        / "squeezenet1_1"
        / "fold1"
        / "rep0"
        / "linear-L7"
        / "predictions.csv"
    )
    member1 = member1.sort_values("path").reset_index(drop=True)
    assert ((both[probabilities] - (workflow[probabilities] + member1[probabilities]) / 2).abs().max().max()) < 1e-5

    # User errors: one line, exit code 2, no traceback.
    for arguments in (
        ["--model", str(tmp_path / "nothing")],
        ["--images", str(tmp_path / "none")],
        ["--out", str(tmp_path)],
        ["--batch-size", "x"],
        ["--device", "tpu"],
    ):
        command = {"--model": str(model_dir), "--images": str(images), "--out": str(out)}
        extra = []
        for key, value in zip(arguments[::2], arguments[1::2]):
            if key in command:
                command[key] = value
            else:
                extra += [key, value]
        bad = subprocess.run(
            [meddap, "predict", *[x for kv in command.items() for x in kv], *extra], capture_output=True, text=True
        )
        assert bad.returncode == 2, (arguments, bad.stderr)
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, (arguments, bad.stderr)


@pytest.mark.slow
def test_rerun_does_nothing_and_one_shard_reruns_only_its_dependents(tiny_run):
    again = snakemake(tiny_run, "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr

    shard = "results/synthetic/fold0/benign/bright/shard000"
    before = sorted((tiny_run / shard).glob("*.png"))
    before_bytes = [p.read_bytes() for p in before]
    log = tiny_run / "results/logs/generate_shard/fold0/benign/bright/shard000.log"
    assert "warm start: in a fork" in log.read_text()  # the run's jobs ran warm (meddap.runtime.warm)
    # The documented command (docs/usage.md, `make regenerate-shard`): regenerate one shard only,
    # here in a fresh interpreter: a warm job's images are a cold job's, byte for byte.
    regenerate = snakemake(tiny_run, "--cores", "2", "--forcerun", shard, "--until", shard, env={"MEDDAP_WARM": "0"})
    # its LoRA and base model are checked first (tests/test_shard_safety.py: a bad one keeps the shard)
    assert planned_jobs(regenerate.stdout + regenerate.stderr) == {"check_generation_inputs": 1, "generate_shard": 1}
    assert "warm start: no (MEDDAP_WARM=0)" in log.read_text()
    assert [p.read_bytes() for p in sorted((tiny_run / shard).glob("*.png"))] == before_bytes  # same seeds, same images

    dry = snakemake(tiny_run, "-n")
    jobs = planned_jobs(dry.stdout + dry.stderr)
    # Per-fold arms: the shard belongs to fold 0's arm, so only fold 0's bright_x1 classifier and
    # fold 0's synthetic test set (scored by fold 0's original classifier) depend on it; fold 1,
    # none_x1 and classic_x1 do not.
    assert jobs == {
        "merge_dataset": 1,
        "train_classifier": 1,
        "evaluate": 2,  # bright_x1 fold 0 + original fold 0 (its synthetic test set changed)
        "index_synthetic": 1,
        "synthetic_quality": 1,  # quality of all synthetic images
        "realism": 1,  # and their realism
        "audit": 1,
        "report": 1,
        "all": 1,
    }
    out = dry.stdout + dry.stderr
    outputs = set(re.findall(r"^\s*output: (\S+?),?$", out, re.M))
    assert (
        "results/datasets/bright_x1/fold0.csv" in outputs
        and "results/classifiers/bright_x1/squeezenet1_1/fold0/rep0" in outputs
    )
    assert not {
        o for o in outputs if o.startswith("results/") and ("fold1" in o or "none_x1" in o or "classic_x1" in o)
    }


@pytest.mark.slow
def test_tiny_run_reproduces_the_recorded_outputs(tiny_run):
    """Refactorings keep the outputs byte-identical: split, dataset variants, shard PNGs, LoRA,
    classifier and base-model weights, predictions and every metric, as recorded by
    `make record-outputs` (re-record after a change meant to change them, and say so)."""
    from outputs_digest import outputs_digest, platform

    recorded = json.loads((REPO / "tests" / "data" / "tiny_outputs.json").read_text())
    if recorded["platform"] != platform():
        pytest.skip(f"outputs recorded on {recorded['platform']}, floats differ elsewhere; this is {platform()}")
    found = outputs_digest(tiny_run)
    changed = sorted(p for p, digest in recorded["digests"].items() if found["digests"].get(p) != digest)
    assert not changed and set(found["digests"]) == set(recorded["digests"]), changed[:10]
    assert found["metrics"] == recorded["metrics"]


def params_changed(output: str) -> set[str]:
    """The rules a dry run reruns because their params changed (its 'Reasons' section)."""
    found = re.search(r"params have changed since last execution:\n\s+(.+)", output)
    return set(found.group(1).split(", ")) if found else set()


@pytest.fixture(scope="module")
def settled_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run (with Snakemake's metadata and the files' times) brought up to date:
    other tests leave the shared run with pending jobs (one regenerated shard), which would mix
    into the job sets asserted below."""
    import shutil

    copy = tmp_path_factory.mktemp("settled") / "run"
    shutil.copytree(
        tiny_run,
        copy,
        copy_function=shutil.copy2,
        ignore=shutil.ignore_patterns("locks", "incomplete", "log", "conda", "singularity"),
    )
    snakemake(copy, "--cores", "2")
    settled = snakemake(copy, "-n")
    assert "Nothing to be done" in settled.stdout + settled.stderr
    return copy


# What the tiny config reruns downstream of new shards (both folds, synthetic variants none_x1 and
# bright_x1): their merges, classifiers and evaluations, fold k's synthetic test set and its scoring
# by the original classifier, quality, audit, report. Every shard job that runs has its own
# check_generation_inputs job (a temp() output) run first.
AFTER_SHARDS = {
    "index_synthetic": 2,
    "merge_dataset": 4,
    "train_classifier": 4,
    "evaluate": 6,
    "synthetic_quality": 1,
    "realism": 1,
    "audit": 1,
    "report": 1,
    "all": 1,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, top, planned, isolated",
    [
        # precision: the LoRAs retrain (and so every shard); generation reads it too (isolated below).
        (
            {"precision": "fp32"},
            {"train_lora"},
            {"train_lora": 6, "check_generation_inputs": 12, "generate_shard": 12, **AFTER_SHARDS},
            ("generate_shard", "results/synthetic/fold0/benign/bright/shard000"),
        ),
        (
            {"generation": {"guidance_scale": 4.5}},
            {"generate_shard"},
            {"check_generation_inputs": 12, "generate_shard": 12, **AFTER_SHARDS},
            None,
        ),
        (
            {"classifier": {"lr": 2.0e-3}},
            {"train_classifier"},
            {
                "train_classifier": 8,
                "evaluate": 8,
                "synthetic_quality": 1,
                "realism": 1,  # the original classifiers are its judges
                "audit": 1,
                "report": 1,
                "all": 1,
            },
            None,
        ),
        ({"evaluation": {"specificity": 0.8}}, {"evaluate"}, {"evaluate": 8, "report": 1, "all": 1}, None),
        # More replicates add classifiers (and their evaluations) beside the existing ones: nothing reruns,
        # and synthetic_quality and realism keep their replicate-0 judges.
        (
            {"classifier": {"replicates": 2}},
            set(),
            {"train_classifier": 8, "evaluate": 8, "audit": 1, "report": 1, "all": 1},
            None,
        ),
        # One class reworded with words the tokenizer has: only its LoRAs (2 folds) and shards (2 x 2).
        (
            {"prompts": {"subjects": {"normal": "no tumor", "benign": "tumor benign"}}},
            {"train_lora"},
            {"train_lora": 2, "check_generation_inputs": 4, "generate_shard": 4, **AFTER_SHARDS},
            ("generate_shard", "results/synthetic/fold1/benign/none/shard000"),
        ),
    ],
)
def test_each_setting_reruns_exactly_the_jobs_that_read_it(settled_run, tmp_path, change, top, planned, isolated):
    """Each stage's typed settings reach its jobs through params: a change reruns the jobs that read
    it and, through their outputs, what depends on them; nothing else."""
    config = tmp_path / "change.yaml"
    config.write_text(yaml.safe_dump(change))
    configs = (DEFAULT, TINY, config)
    dry = snakemake(settled_run, "-n", configs=configs)
    output = dry.stdout + dry.stderr
    assert params_changed(output) == top
    assert planned_jobs(output) == planned
    if isolated:  # a rule downstream of a rerun also reads the setting itself
        rule, target = isolated
        alone = snakemake(
            settled_run, "-n", "--allowed-rules", rule, "check_generation_inputs", "--", target, configs=configs
        )
        assert params_changed(alone.stdout + alone.stderr) == {rule}


@pytest.mark.slow
def test_adding_an_adjective_generates_its_shards_without_retraining_the_base_model(settled_run, tmp_path):
    """The small model's corpus teaches base_model.pretrain.adjectives, its own key: a new generation
    adjective adds its shards (and what reads them) but retrains neither the base model nor a LoRA,
    and the run says that the model was not taught it."""
    config = tmp_path / "dark.yaml"
    config.write_text(yaml.safe_dump({"generation": {"adjectives": ["none", "bright", "dark"]}}))
    dry = snakemake(settled_run, "-n", configs=(DEFAULT, TINY, config))
    output = dry.stdout + dry.stderr
    planned = planned_jobs(output)
    # Only synthetic_quality's and realism's params name the new shards (they read every shard of every arm).
    assert params_changed(output) == {"synthetic_quality", "realism"}
    assert "pretrain_base" not in planned and "train_lora" not in planned
    assert planned["generate_shard"] == 6  # 2 folds x 3 classes x 1 shard of "dark"
    assert "generation.adjectives ['dark']: not taught" in output


@pytest.mark.slow
def test_split_scope_lets_the_audit_name_the_validation_leak(tiny_run, tmp_path):
    """lora.scope: split (one LoRA per class for every fold): the audit finds each fold's
    validation images among the LoRAs' training images (the report's first lines, built from
    the same verdict, are tested in test_leak_free.py)."""
    import shutil

    # Reuse the tiny run's split, phantom, base model and `original` classifiers (copied with their
    # times): only the split-scope arm and what depends on it run here.
    for relative in (
        "resources",
        "results/splits",
        "results/base_model",
        "results/test_sets",
        "results/datasets/original",
        "results/classifiers/original",
    ):
        shutil.copytree(tiny_run / relative, tmp_path / relative, copy_function=shutil.copy2)
    split_scope = tmp_path / "split_scope.yaml"
    split_scope.write_text(
        yaml.safe_dump(
            {"lora": {"scope": "split"}, "generation": {"variant_families": ["adjective"], "adjectives": ["bright"]}}
        )
    )
    configs = (DEFAULT, REPO / "tests" / "configs" / "tiny.yaml", split_scope)
    dry = snakemake(tmp_path, "-n", configs=configs)
    assert "pretrain_base" not in planned_jobs(dry.stdout + dry.stderr)
    snakemake(tmp_path, "--cores", "2", "--until", "audit", configs=configs)
    findings = pd.read_csv(tmp_path / "results" / "audit" / "findings.csv")
    manifest = pd.read_csv(tmp_path / "results" / "splits" / "manifest.csv")
    leaked = findings[findings["classifier"].str.contains("bright_x1")]
    assert (
        set(leaked["protected_set"]) == {"validation"}
        and leaked["via"].str.startswith("lora:results/lora/split/").all()
    )
    assert leaked["accepted"].all() and leaked["reason"].str.contains("lora.scope: split").all()
    # Every validation image of every fold was seen by the LoRA of its class.
    for fold in (0, 1):
        validation = set(manifest.loc[(manifest["split"] == "train") & (manifest["fold"] == fold), "path"])
        assert set(leaked.loc[leaked["fold"] == fold, "image"]) == validation
    assert (
        pd.read_csv(tmp_path / "results" / "audit" / "summary.csv").query("variant == 'original'")["status"] == "clean"
    ).all()
    assert "accepted finding" in (tmp_path / "results" / "audit" / "verdict.txt").read_text()
