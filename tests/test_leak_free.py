"""Leak-free by construction: per-fold arms, the pretraining corpus, and the lineage audit."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from meddap.audit.leaks import AcceptedLeaks, AuditError, audit_classifiers, fail_on, verdict
from meddap.data.arms import arm_training_rows
from meddap.diffusion.adjectives import OPERATIONS, apply_adjective, caption_adjectives, taught_adjectives
from meddap.evidence.quality import EXPECTATIONS, image_measures
from meddap.evidence.summary import leakage_notes, readable_summary
from meddap.provenance.lineage import write_lineage


@pytest.fixture
def manifest():
    rows = [(f"d/{cls}{i}.png", cls, "train", i % 3, 100 * (cls == "b") + i) for cls in ("a", "b") for i in range(9)]
    rows += [
        (f"d/{cls}t{i}.png", cls, "test", -1, 500 + 100 * (cls == "b") + i) for cls in ("a", "b") for i in range(3)
    ]
    return pd.DataFrame(rows, columns=["path", "class", "split", "fold", "group"])


def test_a_folds_arm_trains_on_the_training_split_without_that_folds_validation_rows(manifest):
    for fold in range(3):
        rows = arm_training_rows(manifest, f"fold{fold}")
        assert (rows["split"] == "train").all()
        assert (rows["fold"] != fold).all()
        assert len(rows) == 12  # the other two folds of both classes
    assert len(arm_training_rows(manifest, "split")) == 18
    with pytest.raises(ValueError, match="unknown generative arm"):
        arm_training_rows(manifest, "fold")


# ------------------------------------------------------------------ the lineage audit
def image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    return str(path)


def fold0_classifier(tmp_path, manifest, name, extra: dict):
    """A fold-0 classifier folder (model.json, rows.csv): fold 0's training originals train beside
    the ``extra`` rows of class "a" (path, source, derived_from), and fold 0's originals validate."""
    folder = tmp_path / "classifiers" / name / "resnet18" / "fold0" / "rep0"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"variant": name, "arch": "resnet18", "fold": 0, "replicate": 0}))
    train = manifest[(manifest["split"] == "train") & (manifest["fold"] != 0)]
    validation = manifest[(manifest["split"] == "train") & (manifest["fold"] == 0)]
    rows = [
        pd.DataFrame({"path": train["path"], "class": train["class"], "source": "original", "role": "train"}),
        pd.DataFrame({**extra, "class": "a", "role": "train"}),
        pd.DataFrame(
            {"path": validation["path"], "class": validation["class"], "source": "original", "role": "validation"}
        ),
    ]
    pd.concat(rows).fillna({"derived_from": ""}).to_csv(folder / "rows.csv", index=False)
    return folder


@pytest.fixture
def artifacts(tmp_path):
    """A dataset, a fold-0 LoRA on fold 0's training originals, a shard from it, a classifier."""
    data = {
        f"{cls}{i}": image(tmp_path / "data" / f"{cls}{i}.png", 10 * (cls == "b") + i) for cls in "ab" for i in range(6)
    }
    rows = [
        (data[f"{cls}{i}"], cls, "train" if i < 4 else "test", i % 2 if i < 4 else -1, 10 * (cls == "b") + i)
        for cls in "ab"
        for i in range(6)
    ]
    manifest = pd.DataFrame(rows, columns=["path", "class", "split", "fold", "group"])
    base = tmp_path / "base_model"
    base.mkdir()
    write_lineage(base, "base_model", images=[image(tmp_path / "corpus" / f"c{i}.png", 100 + i) for i in range(3)])

    def classifier(lora_images, name="mixed_x1"):
        lora = tmp_path / "lora" / name / "a"
        lora.mkdir(parents=True)
        write_lineage(lora, "lora", images=lora_images, inputs={"base_model": str(base)})
        shard = tmp_path / "synthetic" / name / "a" / "none" / "shard000"
        shard.mkdir(parents=True)
        write_lineage(shard, "shard", inputs={"lora": str(lora), "base_model": str(base)})
        extra = {"path": [str(shard / "x.png")], "source": ["synthetic"], "derived_from": [str(shard)]}
        return fold0_classifier(tmp_path, manifest, name, extra)

    return manifest, data, classifier


def test_the_audit_passes_a_clean_lineage(artifacts):
    manifest, data, classifier = artifacts
    fold0_training = list(manifest.loc[(manifest["split"] == "train") & (manifest["fold"] == 1), "path"])
    findings, summary = audit_classifiers([classifier(fold0_training)], manifest, {}, max_distance=10)
    assert findings.empty
    assert summary["status"].tolist() == ["clean"]
    # Direct originals, the LoRA's images and the base model's corpus all count as influences.
    assert summary["influencing_images"].iloc[0] == 4 + 3
    assert verdict(findings, summary).startswith("Lineage audit: passed")


def test_the_audit_names_a_validation_image_that_reached_training_through_a_lora(artifacts):
    manifest, data, classifier = artifacts
    leaked = data["a0"]  # fold 0: the classifier's validation image
    findings, summary = audit_classifiers([classifier([leaked, data["a1"]])], manifest, {}, max_distance=10)
    assert len(findings) == 1
    row = findings.iloc[0]
    assert row["image"] == leaked and row["protected_set"] == "validation" and row["via"].startswith("lora:")
    assert not row["accepted"] and summary["status"].tolist() == ["LEAK"]
    with pytest.raises(AuditError, match="FAILED"):
        fail_on(findings, verdict(findings, summary))
    # Declared by lora.scope: split, the same finding is accepted and reported, not fatal.
    accepted, summary = audit_classifiers(
        [classifier([leaked], "b")], manifest, {}, 10, AcceptedLeaks.from_settings("split", "phantom")
    )
    assert accepted["accepted"].all() and "lora.scope: split" in accepted["reason"].iloc[0]
    fail_on(accepted, "")
    assert "optimistic" in verdict(accepted, summary)


def test_a_test_image_through_a_lora_is_never_accepted(artifacts):
    manifest, data, classifier = artifacts
    findings, _ = audit_classifiers(
        [classifier([data["a5"]])], manifest, {}, 10, AcceptedLeaks.from_settings("split", "dataset")
    )
    assert findings["protected_set"].tolist() == ["test"]
    assert not findings["accepted"].any()


def guided_classifier(tmp_path, manifest, row_guides, shard_guides, name):
    """A fold-0 classifier of a guided variant: its shard (lineage listing ``shard_guides``) and
    one training row per guide in ``row_guides``, beside fold 1's originals (fold 0 validates)."""
    shard = tmp_path / "guided" / name / "a" / "none" / "shard000"
    shard.mkdir(parents=True)
    write_lineage(shard, "shard", images=shard_guides)
    paths = [str(shard / f"{i}.png") for i in range(len(row_guides))]
    return fold0_classifier(tmp_path, manifest, name, {"path": paths, "source": "guided", "derived_from": row_guides})


def test_a_guide_from_the_validation_fold_fails_the_audit(artifacts, tmp_path):
    manifest, data, _ = artifacts
    clean = [data["a1"], data["a3"]]  # fold 1: the fold-0 classifier's training originals
    findings, summary = audit_classifiers([guided_classifier(tmp_path, manifest, clean, clean, "ok")], manifest, {}, 10)
    assert findings.empty and summary["status"].tolist() == ["clean"]
    # A validation image (a0, fold 0) injected as a row's guide: a leak, whatever the config declares.
    injected = guided_classifier(tmp_path, manifest, [data["a1"], data["a0"]], clean, "row")
    accepting = AcceptedLeaks.from_settings("split", "dataset")
    findings, summary = audit_classifiers([injected], manifest, {}, 10, accepting)
    assert set(findings["image"]) == {data["a0"]} and not findings["accepted"].any()
    assert set(findings["protected_set"]) == {"validation", "outside training rows"}
    assert findings["via"].str.startswith("guide:").all()
    with pytest.raises(AuditError, match="FAILED"):
        fail_on(findings, verdict(findings, summary))
    # Listed by the shard's lineage only (its rows name clean guides): found all the same.
    listed = guided_classifier(tmp_path, manifest, clean, [*clean, data["a2"]], "lineage")
    findings, _ = audit_classifiers([listed], manifest, {}, 10)
    assert set(findings["image"]) == {data["a2"]} and summary["status"].tolist() == ["LEAK"]
    # A guide from outside the dataset (no protected set holds it) is still not a training original.
    stranger = image(tmp_path / "elsewhere" / "x.png", 77)
    outside = guided_classifier(tmp_path, manifest, [data["a1"], stranger], [data["a1"], stranger], "outside")
    findings, summary = audit_classifiers([outside], manifest, {}, 10)
    assert findings[["image", "protected_set"]].values.tolist() == [[stranger, "outside training rows"]]
    assert summary["status"].tolist() == ["LEAK"]
    assert "is not one of its training originals" in verdict(findings, summary)


def filtered_classifier(tmp_path, manifest, judge_images, name):
    """A fold-0 classifier of a filtered variant: one text-to-image row kept by a judge whose
    lineage lists ``judge_images`` (what it trained on)."""
    judge = tmp_path / "judges" / name
    judge.mkdir(parents=True)
    write_lineage(judge, "judge", images=judge_images)
    shard = tmp_path / "synthetic" / name / "a" / "none" / "shard000"
    shard.mkdir(parents=True)
    write_lineage(shard, "shard")
    extra = {"path": [str(shard / "0.png")], "source": "synthetic", "derived_from": [str(shard)]}
    return fold0_classifier(tmp_path, manifest, name, {**extra, "selected_by": [str(judge)]})


def test_a_judge_that_saw_the_validation_fold_fails_the_audit(artifacts, tmp_path):
    """The judge of a filtered variant decides which synthetic images train the classifier: its
    training images are influences, so a judge trained on a validation image is a leak."""
    manifest, data, _ = artifacts
    fold1 = [data["a1"], data["a3"], data["b1"], data["b3"]]  # the fold-0 arm's training originals
    findings, summary = audit_classifiers([filtered_classifier(tmp_path, manifest, fold1, "clean")], manifest, {}, 10)
    assert findings.empty and summary["status"].tolist() == ["clean"]
    leaky = filtered_classifier(tmp_path, manifest, [*fold1, data["b0"], data["a4"]], "leaky")  # b0 validates, a4 tests
    findings, summary = audit_classifiers([leaky], manifest, {}, 10, AcceptedLeaks.from_settings("split", "dataset"))
    assert set(zip(findings["image"], findings["protected_set"])) == {(data["b0"], "validation"), (data["a4"], "test")}
    assert findings["via"].str.startswith("judge:").all() and not findings["accepted"].any()
    with pytest.raises(AuditError, match="FAILED"):
        fail_on(findings, verdict(findings, summary))


def test_near_duplicates_count_as_the_same_image(artifacts, tmp_path):
    manifest, data, classifier = artifacts
    # Same group as the validation image a0 (group 0): a re-export of the same scan.
    manifest = pd.concat(
        [manifest, pd.DataFrame([(data["a1"] + ".copy.png", "a", "train", 1, 0)], columns=manifest.columns)]
    )
    Image.open(data["a0"]).save(data["a1"] + ".copy.png")
    findings, _ = audit_classifiers([classifier([data["a1"] + ".copy.png"])], manifest, {}, 10)
    assert findings["match"].tolist() == ["near-duplicate group"]
    # An unseen set holding a brightened copy of a training original: found by perceptual hash.
    copy = tmp_path / "unseen" / "a" / "copy.png"
    copy.parent.mkdir(parents=True)
    Image.fromarray(np.clip(np.asarray(Image.open(data["a3"]), dtype=np.int32) + 10, 0, 255).astype(np.uint8)).save(
        copy
    )
    findings, _ = audit_classifiers(
        [classifier([], "c")], manifest, {"deviceB": pd.DataFrame({"path": [str(copy)]})}, 10
    )
    assert findings["protected_set"].tolist() == ["unseen:deviceB"] and findings["image"].tolist() == [data["a3"]]


def test_the_report_opens_with_the_leak_warning_and_the_audit(artifacts):
    notes = leakage_notes("split", "dataset", "Lineage audit: 3 accepted finding(s).")
    assert "lora.scope is `split`" in notes[0] and "optimistic" in notes[0]
    assert "pretrained on this dataset" in notes[1]
    text = readable_summary(
        pd.DataFrame(columns=["metric"]), pd.DataFrame(columns=["arch", "class", "adjective"]), 0.5, preface=notes
    )
    assert text.splitlines()[2].startswith("**Warning: lora.scope is `split`")
    assert leakage_notes("fold", "phantom", "Lineage audit: passed.") == ["Lineage audit: passed."]


# ------------------------------------------------------------------ the pretraining corpus
@pytest.mark.parametrize("adjective", sorted(a for a, checks in EXPECTATIONS.items() if checks))
def test_each_adjective_operation_does_what_its_pixel_check_expects(adjective):
    from meddap.data.phantom import DEFAULT_DEVICES, simulate_case

    grey = simulate_case("benign", DEFAULT_DEVICES["linear-L12"], seed=3, image_size=64).image
    plain = np.repeat(grey[..., None], 3, axis=-1)
    changed = apply_adjective(plain, adjective)
    assert changed.shape == plain.shape and changed.dtype == np.uint8
    for measure, direction in EXPECTATIONS[adjective]:
        before, after = image_measures(plain)[measure], image_measures(changed)[measure]
        assert (after > before) if direction == "up" else (after < before), (adjective, measure, before, after)


def test_captions_give_every_adjective_its_share():
    adjectives = caption_adjectives(180, 0.5, seed=1)
    assert set(caption_adjectives(10, 0.5, 1, ["none", "bright", "unknown"])) == {"none", "bright"}
    assert caption_adjectives(10, 0.5, 1, ["none"]) == ["none"] * 10
    counts = pd.Series(adjectives).value_counts()
    assert counts["none"] == 90
    assert set(counts.index) == {"none", *OPERATIONS}
    assert counts.drop("none").max() - counts.drop("none").min() <= 1
    assert caption_adjectives(180, 0.5, seed=1) == adjectives
    # What the pretraining job is given (its params): the order, or an adjective with nothing to
    # teach, does not change the corpus, so it does not retrain the base model either.
    assert taught_adjectives(["none", "dark", "bright"]) == taught_adjectives(["bright", "dark"]) == ["bright", "dark"]
    # The schema's choices for base_model.pretrain.adjectives are the adjectives with an operation.
    from meddap.settings.choices import TEACHABLE_ADJECTIVES

    assert set(TEACHABLE_ADJECTIVES) == set(OPERATIONS)
    assert caption_adjectives(30, 0.5, 2, ["dark", "none", "bright"]) == caption_adjectives(
        30, 0.5, 2, ["bright", "dark"]
    )


def test_the_pretraining_corpus_drops_near_copies_of_dataset_images(tmp_path):
    from meddap.data.near_duplicates import hash_to_hex, perceptual_hash
    from meddap.diffusion.pretraining import decontaminate

    corpus_paths = [image(tmp_path / "corpus" / f"c{i}.png", i) for i in range(4)]
    dataset_image = image(tmp_path / "data" / "x.png", 99)
    Image.open(corpus_paths[2]).save(tmp_path / "data" / "copy_of_c2.png")
    corpus = pd.DataFrame({"path": corpus_paths, "class": "a", "adjective": "none", "caption": "c"})
    references = [dataset_image, str(tmp_path / "data" / "copy_of_c2.png")]
    kept, dropped = decontaminate(corpus, references, [hash_to_hex(perceptual_hash(p)) for p in references], 10)
    assert dropped["path"].tolist() == [corpus_paths[2]] and len(kept) == 3


def test_meddap_audit_command_exits_1_on_a_leak_and_0_when_clean(artifacts, tmp_path, monkeypatch):
    from meddap.cli import main

    manifest, data, classifier = artifacts
    results = tmp_path / "results"
    (results / "splits").mkdir(parents=True)
    manifest.to_csv(results / "splits" / "manifest.csv", index=False)
    leaky = classifier([data["a5"]])  # a test image behind fold 0's LoRA
    (results / "classifiers").symlink_to(leaky.parents[3])
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "--results", str(results), "--findings", "findings.csv"]) == 1
    assert pd.read_csv(tmp_path / "findings.csv")["protected_set"].tolist() == ["test"]
    assert main(["audit", "--results", str(tmp_path / "nowhere")]) == 2
    import shutil

    shutil.rmtree(leaky.parents[2])
    classifier(list(manifest.loc[(manifest["split"] == "train") & (manifest["fold"] == 1), "path"]), "clean")
    assert main(["audit", "--results", str(results)]) == 0
