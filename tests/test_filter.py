"""Filtered synthetic variants (generation.filter) end to end on the tiny config: a judge per arm that
never saw its fold's validation images, a verdict on every generated image, filtered merges that
keep their planned count from the oversampled shards, the judge in the lineage audit, the report's
counts, and a regenerated shard rerunning its arm's filter only."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

# The tiny run's images lie 20 to 32 pHash bits from their nearest training original (measured on
# it): near_copy_bits 24 drops about a sixth of them, so the merges really skip images; oversample 4
# leaves enough to keep. (Its barely trained judge is never 0.9 sure.)
FILTER_OVERLAY = {
    "generation": {
        "variant_families": ["mixed"],
        "filter": {"families": ["mixed"], "judge_confidence": 0.9, "near_copy_bits": 24, "oversample": 4},
    }
}


@pytest.mark.slow
def test_filtered_variants_keep_their_count_and_their_judges_never_saw_the_validation_fold(tiny_run, tmp_path):
    import shutil

    from conftest import DEFAULT, TINY, planned_jobs, snakemake

    from meddap.data.arms import arm_training_rows
    from meddap.data.near_duplicates import hash_images, hex_to_hash
    from meddap.evidence.filtered import filter_lines, filter_summary

    # The tiny run's split, test sets, base model and LoRAs serve; the shards are generated here,
    # oversampled (the tiny run's hold fewer images, and a copy carries no Snakemake metadata to tell
    # it so), and the synthetic test set that indexes them with them.
    for relative in ("resources", "results/splits", "results/test_sets", "results/base_model", "results/lora"):
        shutil.copytree(tiny_run / relative, tmp_path / relative, copy_function=shutil.copy2)
    shutil.rmtree(tmp_path / "results/test_sets/synthetic")
    overlay = tmp_path / "filter.yaml"
    overlay.write_text(yaml.safe_dump(FILTER_OVERLAY))
    configs = (DEFAULT, TINY, overlay)
    dry = planned_jobs((lambda r: r.stdout + r.stderr)(snakemake(tmp_path, "-n", configs=configs)))
    assert dry["train_judge"] == 2 and dry["filter_shards"] == 2  # 2 arms x the text-to-image stream
    assert not {"train_lora", "pretrain_base"} & set(dry)
    # arms x classes x adjectives x 2 shards: mixed_x1_filtered takes up to 2 per adjective, from 4 x 2 = 8
    assert dry["generate_shard"] == 2 * 3 * 2 * 2
    snakemake(tmp_path, "--cores", "2", "--until", "audit", configs=configs)

    manifest = pd.read_csv(tmp_path / "results/splits/manifest.csv")
    dropped = 0
    for fold in (0, 1):
        arm = f"fold{fold}"
        training = arm_training_rows(manifest, arm)
        validation = set(manifest.loc[(manifest["split"] == "train") & (manifest["fold"] == fold), "path"])
        test = set(manifest.loc[manifest["split"] == "test", "path"])
        judge = tmp_path / "results/judges" / arm
        # The judge trained on the arm's training originals, and on nothing its fold validates or tests on.
        lineage = {entry["path"] for entry in json.loads((judge / "lineage.json").read_text())["images"]}
        assert lineage == set(training["path"]) and not lineage & (validation | test)
        rows = pd.read_csv(judge / "rows.csv")
        assert set(rows["role"]) == {"train"} and set(rows["path"]) == lineage
        history = pd.read_csv(judge / "history.csv")
        assert history["selected"].tolist() == [False, True] and history["val_macro_f1"].isna().all()

        verdicts = pd.read_csv(tmp_path / f"results/filter/synthetic/{arm}.csv", keep_default_na=False)
        shards = {p.parent for p in (tmp_path / f"results/synthetic/{arm}").glob("*/*/shard*/metadata.csv")}
        generated = sum(len(pd.read_csv(shard / "metadata.csv")) for shard in shards)
        assert len(verdicts) == generated and set(verdicts["nearest_original"]) <= set(training["path"])
        # The distance to the nearest original, in the split's hash space (its recorded hashes).
        recorded = manifest.set_index("path")["phash"]
        nearest = np.stack([hex_to_hash(recorded[path]) for path in verdicts["nearest_original"]])
        distances = (hash_images([str(tmp_path / path) for path in verdicts["path"]]) != nearest).sum(axis=1)
        assert (distances == verdicts["near_copy_distance"]).all()
        dropped += int((~verdicts["kept"]).sum())
        kept = set(verdicts.loc[verdicts["kept"], "path"])

        filtered = pd.read_csv(tmp_path / f"results/datasets/mixed_x1_filtered/fold{fold}.csv", keep_default_na=False)
        plain = pd.read_csv(tmp_path / f"results/datasets/mixed_x1/fold{fold}.csv", keep_default_na=False)
        added = filtered[filtered["source"] == "synthetic"]
        # The planned count per class (the unfiltered twin's), every image one the filter kept.
        assert (
            added.groupby("class").size().to_dict()
            == plain[plain["source"] == "synthetic"].groupby("class").size().to_dict()
        )
        assert set(added["path"]) <= kept and (added["selected_by"] == f"results/judges/{arm}").all()
    # Some images were dropped, and the merges skipped them.
    assert dropped > 0
    summary = pd.read_csv(tmp_path / "results/audit/summary.csv")
    assert (summary["status"] == "clean").all() and "mixed_x1_filtered" in set(summary["variant"])
    table = filter_summary(sorted((tmp_path / "results/filter/synthetic").glob("*.csv")))
    assert table["generated"].sum() == table[["kept", "dropped_wrong_class", "dropped_near_copy"]].sum().sum()
    assert int(table[["dropped_wrong_class", "dropped_near_copy"]].sum().sum()) == dropped
    assert "## Filtered synthetic sets" in filter_lines(table)

    # Realism per generation mode.
    snakemake(tmp_path, "--cores", "2", "--until", "realism", configs=configs)
    tests = pd.read_csv(tmp_path / "results/realism/two_sample.csv")
    assert set(tests["mode"]) == {"text-to-image", "text-to-image filtered"}
    # The same tests for each mode (the tiny run has too few images per class to run them: NaN).
    keys = ["arm", "class", "adjective", "features"]
    by_mode = {mode: set(map(tuple, group[keys].values)) for mode, group in tests.groupby("mode")}
    assert by_mode["text-to-image filtered"] == by_mode["text-to-image"]

    # Regenerating one shard of fold 0 reruns fold 0's filter and merges, not fold 1's.
    shard = "results/synthetic/fold0/benign/bright/shard000"
    snakemake(tmp_path, "--cores", "2", "--forcerun", shard, "--until", shard, configs=configs)
    after = planned_jobs(
        (lambda r: r.stdout + r.stderr)(snakemake(tmp_path, "-n", "--until", "audit", configs=configs))
    )
    assert after["filter_shards"] == 1 and "train_judge" not in after
    # fold 0's mixed_x1 (it reads the shard) and mixed_x1_filtered (it reads the verdicts), and the audit
    assert after == {"filter_shards": 1, "merge_dataset": 2, "train_classifier": 2, "audit": 1}
