"""Guided (image-to-image) generation: guide assignment, strength draws, and the sampler against
diffusers' StableDiffusionImg2ImgPipeline and the VAE round trip (meddap.diffusion.guided)."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import BUSI

from meddap.diffusion.guided import (
    assign_guides,
    denoising_start,
    draw_strengths,
    generate_guided_images,
    guide_offset,
)
from meddap.settings.stages import SamplingSettings

SAMPLING = SamplingSettings(resolution=32, steps=10, guidance_scale=3.0, batch_size=2)


def test_guides_come_only_from_the_candidates_evenly_and_by_position():
    fold_training = [f"benign/benign ({i}).png" for i in (7, 3, 11, 5, 2)]
    offset = guide_offset(42, "fold1", "benign", "bright", len(fold_training))
    guides = assign_guides(fold_training, 0, 23, offset)
    assert set(guides) <= set(fold_training)
    counts = Counter(guides)
    assert set(fold_training) == set(counts) and max(counts.values()) - min(counts.values()) <= 1
    # Shards of a stream: the guides of images 0-9 and 10-22 are those of images 0-22.
    assert assign_guides(fold_training, 0, 10, offset) + assign_guides(fold_training, 10, 13, offset) == guides
    # The caller's row order does not matter; the offset moves the start.
    assert assign_guides(list(reversed(fold_training)), 0, 23, offset) == guides
    assert assign_guides(fold_training, 0, 5, offset + 1) == guides[1:6]
    with pytest.raises(ValueError, match="at least one training original"):
        assign_guides([], 0, 3, 0)


def test_a_list_of_strengths_gives_each_image_its_own_seeded_draw():
    seeds = list(range(1000, 1300))
    assert draw_strengths(0.4, seeds[:3]) == [0.4, 0.4, 0.4]
    draws = draw_strengths([0.25, 0.5, 0.75], seeds)
    assert set(draws) == {0.25, 0.5, 0.75} and min(Counter(draws).values()) > 60
    # An image's draw depends on its seed only, not on the other images of its shard.
    assert draw_strengths([0.25, 0.5, 0.75], seeds[100:110]) == draws[100:110]
    for bad in ([], [0.2, 1.5], -0.1, [True]):
        with pytest.raises(ValueError, match="generation.strength"):
            draw_strengths(bad, seeds[:2])


def test_denoising_start_is_the_pipelines_get_timesteps():
    assert [denoising_start(10, s) for s in (0.0, 0.05, 0.1, 0.55, 1.0)] == [10, 10, 9, 5, 0]


@pytest.fixture(scope="module")
def pipeline_and_guides(small_pipeline_dir):
    from diffusers import DDIMScheduler

    from meddap.diffusion.base_models import load_pipeline
    from meddap.diffusion.denoising import images_to_tensor

    pipeline = load_pipeline(small_pipeline_dir, torch.device("cpu"))
    # SD v1.5's own DDIM settings (a pipeline built around other ones rewrites them with a warning)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config, clip_sample=False, steps_offset=1)
    if not (BUSI / "benign").is_dir():
        pytest.skip("../shared/data/busi is not present beside the checkout")
    paths = sorted(str(p) for p in (BUSI / "benign").glob("*.png"))[:4]
    return pipeline, paths, images_to_tensor(paths, 32)


def test_strength_zero_is_the_vae_round_trip_and_the_distance_grows_with_strength(pipeline_and_guides):
    from meddap.diffusion.autoencoder import round_trip

    pipeline, paths, guides = pipeline_and_guides
    seeds = [11, 12, 13, 14]
    _, reconstructions = round_trip(pipeline.vae, paths, 32)

    # A UNet that predicts no noise (this one is untrained): the strength alone decides how much
    # noise is added and left, so the distance to the guide measures the sampler's noising.
    import copy

    still = copy.copy(pipeline)
    still.unet = copy.deepcopy(pipeline.unet)
    torch.nn.init.zeros_(still.unet.conv_out.weight)
    torch.nn.init.zeros_(still.unet.conv_out.bias)

    def distance(strength: float) -> float:
        images = generate_guided_images(still, "benign", guides, seeds, [strength] * 4, SAMPLING)
        # to the guide as the base model's VAE sees it (this untrained VAE's round trip is far from
        # the original; the pretrained default's is tested by the realism tests)
        return float(np.abs(np.stack(images).astype(float) - reconstructions.astype(float)).mean())

    images = generate_guided_images(pipeline, "benign", guides, seeds, [0.0] * 4, SAMPLING)
    assert np.abs(np.stack(images).astype(int) - reconstructions.astype(int)).max() <= 1
    distances = [distance(s) for s in (0.0, 0.3, 0.6, 1.0)]
    assert distances == sorted(distances) and distances[0] < 0.5 < 5 < distances[-1], distances


@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_guided_images_equal_the_img2img_pipeline_and_keep_order_across_strengths(pipeline_and_guides, scheduler):
    import copy

    from diffusers import StableDiffusionImg2ImgPipeline

    from meddap.diffusion.denoising import encode_latents
    from meddap.diffusion.sampling import set_scheduler

    pipeline, _, guides = pipeline_and_guides
    pipeline = copy.copy(pipeline)
    set_scheduler(pipeline, scheduler)  # dpm: the embedded default's, a multistep scheduler with a begin index
    img2img = StableDiffusionImg2ImgPipeline(**pipeline.components)
    seeds, strengths = [5, 6, 7], [0.6, 0.3, 0.6]
    ours = generate_guided_images(
        pipeline, "malignant", guides[:3], seeds, strengths, SamplingSettings(steps=8, guidance_scale=4.0, batch_size=2)
    )
    means, _ = encode_latents(pipeline.vae, guides[:3])
    for index, (seed, strength) in enumerate(zip(seeds, strengths)):
        theirs = img2img(
            "malignant",
            image=means[index : index + 1] * pipeline.vae.config.scaling_factor,  # latents: the posterior mean
            strength=strength,
            num_inference_steps=8,
            guidance_scale=4.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        ).images[0]
        assert np.abs(ours[index].astype(float) / 255 - theirs).max() <= 1.5 / 255, index


# ------------------------------------------------------------------ the guided family in the workflow
GUIDED_OVERLAY = {
    "generation": {"variant_families": ["guided"], "adjectives": ["bright"], "strength": [0.25, 0.5, 0.75]}
}


@pytest.mark.slow
def test_guided_shards_start_from_their_folds_training_originals_and_regenerate_alone(tiny_run, tmp_path):
    """The guided family end to end on the tiny config (its split, base model and LoRAs reused):
    guides come from the arm's training rows of the class, spread evenly, each image records its
    guide and strength draw, the merged rows name the guides, the audit passes; regenerating one
    guided shard gives the same bytes and reruns exactly what depends on it."""
    import shutil

    import pandas as pd
    import yaml
    from conftest import DEFAULT, TINY, planned_jobs, snakemake

    from meddap.data.arms import arm_training_rows

    # The tiny run's text-to-image shards of "bright" are this config's too (same seeds, same LoRAs).
    reused = (
        "resources",
        "results/splits",
        "results/base_model",
        "results/lora",
        "results/test_sets",
        "results/synthetic",
    )
    for relative in reused:
        shutil.copytree(tiny_run / relative, tmp_path / relative, copy_function=shutil.copy2)
    overlay = tmp_path / "guided.yaml"
    overlay.write_text(yaml.safe_dump(GUIDED_OVERLAY))
    configs = (DEFAULT, TINY, overlay)
    dry = planned_jobs((lambda r: r.stdout + r.stderr)(snakemake(tmp_path, "-n", configs=configs)))
    # The tiny run's LoRAs and text-to-image shards serve: only the guided stream is generated.
    assert not {"train_lora", "pretrain_base", "generate_shard"} & set(dry)
    assert dry["generate_guided_shard"] == dry["check_generation_inputs"] == 2 * 3  # 2 folds x 3 classes x "bright"
    snakemake(tmp_path, "--cores", "2", "--until", "audit", configs=configs)

    manifest = pd.read_csv(tmp_path / "results/splits/manifest.csv")
    strengths = []
    for fold in (0, 1):
        training = arm_training_rows(manifest, f"fold{fold}")
        merged = pd.read_csv(tmp_path / f"results/datasets/guided_x1/fold{fold}.csv")
        guided = merged[merged["source"] == "guided"]
        for cls in ("benign", "malignant", "normal"):
            shard = tmp_path / f"results/guided/fold{fold}/{cls}/bright/shard000"
            metadata = pd.read_csv(shard / "metadata.csv")
            candidates = set(training.loc[training["class"] == cls, "path"])
            assert set(metadata["derived_from"]) <= candidates  # never a validation or test image
            uses = Counter(metadata["derived_from"])
            assert max(uses.values()) - min(uses.get(c, 0) for c in candidates) <= 1  # spread evenly
            strengths += list(metadata["strength"])
            lineage = json.loads((shard / "lineage.json").read_text())
            assert {entry["path"] for entry in lineage["images"]} == set(metadata["derived_from"])
            rows = guided[guided["class"] == cls].set_index("path")["derived_from"]
            recorded = {
                str(shard.relative_to(tmp_path) / f): g for f, g in zip(metadata["file"], metadata["derived_from"])
            }
            assert len(rows) and all(recorded[path] == guide for path, guide in rows.items())
    # Each image drew one of the listed strengths (18 images: all three occur).
    assert set(strengths) == {0.25, 0.5, 0.75} and len(strengths) == 18
    summary = pd.read_csv(tmp_path / "results/audit/summary.csv")
    assert (summary["status"] == "clean").all() and "guided_x1" in set(summary["variant"])

    shard = "results/guided/fold0/benign/bright/shard000"
    before = {p.name: p.read_bytes() for p in (tmp_path / shard).glob("*.png")}
    regenerate = snakemake(tmp_path, "--cores", "2", "--forcerun", shard, "--until", shard, configs=configs)
    assert planned_jobs(regenerate.stdout + regenerate.stderr) == {
        "check_generation_inputs": 1,
        "generate_guided_shard": 1,
    }
    assert {p.name: p.read_bytes() for p in (tmp_path / shard).glob("*.png")} == before
    after = planned_jobs(
        (lambda r: r.stdout + r.stderr)(snakemake(tmp_path, "-n", "--until", "audit", configs=configs))
    )
    # Fold 0's guided_x1 dataset, its classifier and the audit; no other shard, fold or variant.
    assert after == {"merge_dataset": 1, "train_classifier": 1, "audit": 1}

    # Class fidelity per mode (issue 28 item 3): the arm's synthetic test set (copied from the tiny
    # run: its text-to-image images of every adjective) is rebuilt for this config: its
    # text-to-image ("bright") and guided images, each row naming its mode.
    test_set = "results/test_sets/synthetic/fold0.csv"
    snakemake(tmp_path, "--cores", "2", "--until", test_set, configs=configs)
    table = pd.read_csv(tmp_path / test_set)
    guided_images = {
        str(path.relative_to(tmp_path)) for path in (tmp_path / "results/guided/fold0").rglob("shard000/*.png")
    }
    assert len(guided_images) == 9 and set(table.loc[table["mode"] == "guided", "path"]) == guided_images
    text_to_image = {
        str(path.relative_to(tmp_path)) for path in (tmp_path / "results/synthetic/fold0").rglob("bright/*/*.png")
    }
    assert text_to_image and set(table.loc[table["mode"] == "text-to-image", "path"]) == text_to_image
