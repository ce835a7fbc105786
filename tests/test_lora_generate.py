import hashlib
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from meddap.diffusion.generate import generate_shard, image_seed, read_shards
from meddap.diffusion.lora import (
    DEFAULT_TARGET_MODULES,
    LORA_WEIGHT_NAME,
    LoraError,
    add_lora,
    apply_lora,
    lora_share,
    train_lora,
    validation_steps,
)
from meddap.diffusion.sd15 import SD15_UNET
from meddap.settings.stages import LoraSettings, SamplingSettings


def train(base_model, image_paths, prompt, out_dir, seed=0, checkpoint_dir=None, on_step=None, **settings):
    """``train_lora`` with its LoraSettings given as keywords (validation as a dict), as the rule's params do."""
    return train_lora(
        base_model,
        image_paths,
        prompt,
        out_dir,
        LoraSettings.from_params(settings),
        seed,
        checkpoint_dir=checkpoint_dir,
        on_step=on_step,
    )


def test_rank4_lora_on_sd15_unet_is_under_a_tenth_of_a_percent():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
    add_lora(unet, rank=4, alpha=4, target_modules=DEFAULT_TARGET_MODULES)
    trainable, base, share = lora_share(unet)
    assert 850_000_000 < base < 870_000_000  # SD v1.5 UNet: 859.5M parameters
    assert trainable == 797_184
    assert share < 0.001


def test_default_lora_on_the_small_model_is_under_one_percent(small_pipeline_dir):
    import yaml

    from meddap.diffusion.small_model import SmallModelSpec, build_small_components

    config = yaml.safe_load(open("config/config.yaml"))
    _, _, _, unet = build_small_components(
        SmallModelSpec(image_size=config["base_model"]["pretrain"]["image_size"]), ["a"], seed=0
    )
    add_lora(unet, config["lora"]["rank"], config["lora"]["alpha"], config["lora"]["target_modules"])
    _, _, share = lora_share(unet)
    assert 0 < share < 0.01


@pytest.fixture(scope="module")
def class_images(tmp_path_factory):
    from meddap.data.phantom import DEFAULT_DEVICES, simulate_case

    folder = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(4):
        path = folder / f"benign ({i}).png"
        Image.fromarray(simulate_case("benign", DEFAULT_DEVICES["linear-L12"], seed=i, image_size=64).image).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def trained_lora(small_pipeline_dir, class_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "benign"
    info = train(
        str(small_pipeline_dir),
        class_images,
        "an ultrasound photo of benign tumor in breast",
        out,
        rank=2,
        steps=3,
        batch_size=2,
        lr=1e-3,
        resolution=32,
        seed=0,
    )
    return out, info


def test_lora_is_saved_in_the_diffusers_format_and_loads(small_pipeline_dir, trained_lora):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    out, info = trained_lora
    assert (out / LORA_WEIGHT_NAME).is_file()
    keys = list(load_file(out / LORA_WEIGHT_NAME))
    assert keys and all(k.startswith("unet.") for k in keys)
    assert info["trainable_parameters"] > 0 and info["trainable_share"] < 0.05
    pipe = StableDiffusionPipeline.from_pretrained(
        small_pipeline_dir, safety_checker=None, requires_safety_checker=False
    )
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, pipe.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = pipe.unet(sample, 500, text).sample
        pipe.load_lora_weights(str(out))  # the plain diffusers call reads it
        after = pipe.unet(sample, 500, text).sample
    assert not torch.allclose(before, after)


def test_lora_from_another_base_model_is_a_clear_error(small_pipeline_dir, trained_lora, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    out, _ = trained_lora
    state = {k: torch.zeros(v.shape[0] + 3, *v.shape[1:]) for k, v in load_file(out / LORA_WEIGHT_NAME).items()}
    (tmp_path / "bad").mkdir()
    save_file(state, tmp_path / "bad" / LORA_WEIGHT_NAME)
    pipe = StableDiffusionPipeline.from_pretrained(
        small_pipeline_dir, safety_checker=None, requires_safety_checker=False
    )
    with pytest.raises(LoraError, match="does not fit this base model"):
        apply_lora(pipe, tmp_path / "bad")


def generate(small_pipeline_dir, trained_lora, out, **kwargs):
    sampling = {"resolution": 32, "steps": 3, "guidance_scale": 3.0, "batch_size": 4}
    sampling.update({key: kwargs.pop(key) for key in list(kwargs) if key in {f.name for f in fields(SamplingSettings)}})
    args = dict(
        cls="benign",
        adjective="bright",
        shard=2,
        prompt="a bright ultrasound photo of benign tumor in breast",
        shard_size=4,
        seed=42,
        sampling=SamplingSettings(**sampling),
    )
    args.update(kwargs)
    return generate_shard(str(small_pipeline_dir), trained_lora[0], out, **args)


def test_same_shard_twice_gives_identical_png_bytes(small_pipeline_dir, trained_lora, tmp_path):
    first = generate(small_pipeline_dir, trained_lora, tmp_path / "a")
    second = generate(small_pipeline_dir, trained_lora, tmp_path / "b")
    digest = lambda folder: [
        hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in sorted(p.name for p in folder.glob("*.png"))
    ]
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert first.equals(second)
    assert list(first.columns[:5]) == ["file", "class", "adjective", "prompt", "seed"]
    assert first["seed"].tolist() == [image_seed(42, "benign", "bright", 2, i) for i in range(4)]
    assert len(set(digest(tmp_path / "a"))) == 4  # the images differ from each other


def test_images_do_not_depend_on_the_batch_size(small_pipeline_dir, trained_lora, tmp_path):
    generate(small_pipeline_dir, trained_lora, tmp_path / "b1", batch_size=1, shard_size=8)
    generate(small_pipeline_dir, trained_lora, tmp_path / "b8", batch_size=8, shard_size=8)
    names = sorted(p.name for p in (tmp_path / "b1").glob("*.png"))
    assert len(names) == 8
    for name in names:
        a = np.asarray(Image.open(tmp_path / "b1" / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "b8" / name), dtype=int)
        assert np.abs(a - b).max() <= 1


def test_read_shards_gives_paths_in_order(small_pipeline_dir, trained_lora, tmp_path):
    generate(small_pipeline_dir, trained_lora, tmp_path / "s", grayscale=True)
    frame = read_shards([tmp_path / "s"])
    assert frame["index"].tolist() == [0, 1, 2, 3]
    image = np.asarray(Image.open(frame["path"][0]))
    assert image.shape == (32, 32, 3) and (image[..., 0] == image[..., 2]).all()


def test_lora_resumes_from_its_checkpoint(small_pipeline_dir, class_images, tmp_path, caplog):
    import json
    import logging

    from safetensors.torch import load_file

    prompt = "an ultrasound photo of benign tumor in breast"
    common = dict(
        rank=2,
        steps=6,
        batch_size=2,
        lr=1e-3,
        resolution=32,
        seed=5,
        checkpoint_every=2,
        validation={"images": 1, "steps": 2},
    )
    train(
        str(small_pipeline_dir),
        class_images,
        prompt,
        tmp_path / "straight",
        checkpoint_dir=tmp_path / "ckpt0",
        **common,
    )
    assert not (tmp_path / "ckpt0").exists()  # a finished run removes its checkpoint

    class Killed(Exception):
        pass

    def dies_after_step_4(step, loss):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train(
            str(small_pipeline_dir),
            class_images,
            prompt,
            tmp_path / "resumed",
            checkpoint_dir=tmp_path / "ckpt",
            on_step=dies_after_step_4,
            **common,
        )
    assert not (tmp_path / "resumed").exists()  # nothing that looks complete
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["step"] == 4
    assert len(pd.read_csv(tmp_path / "ckpt" / "loss.csv")) == 4  # the history so far travels with the checkpoint

    calls = []
    with caplog.at_level(logging.INFO, logger="meddap.diffusion.lora"):
        resumed = train(
            str(small_pipeline_dir),
            class_images,
            prompt,
            tmp_path / "resumed",
            checkpoint_dir=tmp_path / "ckpt",
            on_step=lambda step, loss: calls.append((step, loss)),
            **common,
        )
    assert resumed["resumed_from_step"] == 4
    assert [step for step, _ in calls] == [4, 5, 6] and calls[0][1] is None  # the start, then each step with its loss
    assert "resuming LoRA training from checkpoint" in caplog.text
    a = load_file(tmp_path / "straight" / LORA_WEIGHT_NAME)
    b = load_file(tmp_path / "resumed" / LORA_WEIGHT_NAME)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # The history of the resumed run is the uninterrupted run's: every step's loss, every checkpoint's images.
    straight_losses, resumed_losses = (pd.read_csv(tmp_path / run / "loss.csv") for run in ("straight", "resumed"))
    assert resumed_losses["step"].tolist() == list(range(1, 7))
    pd.testing.assert_frame_equal(straight_losses, resumed_losses, check_exact=True)
    assert [loss for _, loss in calls[1:]] == resumed_losses["loss"].tolist()[4:]
    straight_images, resumed_images = (
        pd.read_csv(tmp_path / run / "validation.csv") for run in ("straight", "resumed")
    )
    pd.testing.assert_frame_equal(straight_images, resumed_images)
    assert straight_images["step"].tolist() == [2, 4, 6]
    for name in resumed_images["file"]:
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()
    straight_info, resumed_info = (
        json.loads((tmp_path / run / "lora_info.json").read_text()) for run in ("straight", "resumed")
    )
    assert resumed_info["final_loss"] == straight_info["final_loss"]


def test_validation_steps_are_the_checkpoints_and_the_last_step():
    assert validation_steps(300, 200) == [200, 300]
    assert validation_steps(600, 200) == [200, 400, 600]
    assert validation_steps(300, 0) == [300]


def test_lora_writes_its_loss_per_step_and_validation_images_at_each_checkpoint(
    small_pipeline_dir, class_images, tmp_path
):
    import json

    out = tmp_path / "benign"
    info = train(
        str(small_pipeline_dir),
        class_images,
        "an ultrasound photo of benign tumor in breast",
        out,
        rank=2,
        steps=5,
        batch_size=2,
        lr=1e-3,
        resolution=32,
        seed=0,
        checkpoint_every=2,
        validation={"images": 2, "steps": 2, "grayscale": True},
    )
    losses = pd.read_csv(out / "loss.csv")
    assert losses["step"].tolist() == [1, 2, 3, 4, 5]
    assert np.isfinite(losses["loss"]).all() and (losses["loss"] > 0).all() and (losses["lr"] == 1e-3).all()
    assert info["final_loss"] == pytest.approx(losses["loss"].mean())
    assert json.loads((out / "lora_info.json").read_text())["final_loss"] == pytest.approx(info["final_loss"])
    images = pd.read_csv(out / "validation.csv")
    assert list(images.columns) == ["step", "prompt", "image", "seed", "file"]
    assert images["step"].tolist() == [2, 2, 4, 4, 5, 5]  # checkpoints 2 and 4, and the last step
    assert set(images["prompt"]) == {"an ultrasound photo of benign tumor in breast"}
    # The same seeds at every step, so the images of successive checkpoints are comparable.
    assert images.groupby("step")["seed"].apply(list).map(tuple).nunique() == 1 and images["seed"].nunique() == 2
    arrays = {name: np.asarray(Image.open(out / name)) for name in images["file"]}
    assert sorted(p.relative_to(out).as_posix() for p in (out / "validation").glob("*.png")) == sorted(arrays)
    assert all(a.shape == (32, 32, 3) and (a[..., 0] == a[..., 1]).all() for a in arrays.values())  # grayscale
    first, second = (arrays[name] for name in images.loc[images["step"] == 5, "file"])
    assert not np.array_equal(first, second)  # two seeds, two images


def test_shared_lora_renders_validation_images_for_every_class_prompt(small_pipeline_dir, class_images, tmp_path):
    prompts = ["an ultrasound photo of benign tumor in breast"] * 2 + ["an ultrasound photo of no tumor in breast"] * 2
    train(
        str(small_pipeline_dir),
        class_images,
        prompts,
        tmp_path / "shared",
        rank=2,
        steps=2,
        batch_size=2,
        lr=1e-3,
        resolution=32,
        seed=0,
        validation={"images": 1, "steps": 2},
    )
    images = pd.read_csv(tmp_path / "shared" / "validation.csv")
    assert sorted(images["prompt"]) == sorted(set(prompts)) and set(images["step"]) == {2}


def test_validation_images_leave_the_trained_lora_unchanged(small_pipeline_dir, class_images, tmp_path):
    from safetensors.torch import load_file

    prompt = "an ultrasound photo of benign tumor in breast"
    common = dict(rank=2, steps=4, batch_size=2, lr=1e-3, resolution=32, seed=3, checkpoint_every=2)
    runs = {}
    for images in (0, 2):
        out = tmp_path / f"images{images}"
        torch.manual_seed(123)
        train(str(small_pipeline_dir), class_images, prompt, out, validation={"images": images, "steps": 3}, **common)
        runs[images] = (load_file(out / LORA_WEIGHT_NAME), pd.read_csv(out / "loss.csv"), torch.get_rng_state())
    assert (
        not (tmp_path / "images0" / "validation").exists()
        and len(pd.read_csv(tmp_path / "images2" / "validation.csv")) == 4
    )
    (weights0, losses0, rng0), (weights2, losses2, rng2) = runs[0], runs[2]
    assert weights0.keys() == weights2.keys() and all(torch.equal(weights0[k], weights2[k]) for k in weights0)
    pd.testing.assert_frame_equal(losses0, losses2, check_exact=True)
    assert torch.equal(rng0, rng2)  # the global RNG stream is as if no image was rendered


def test_shared_lora_trains_each_image_with_its_own_class_prompt(small_pipeline_dir, class_images, tmp_path):
    """lora.mode: shared: one LoRA on all classes; the denoiser sees each image's class prompt."""
    from meddap.diffusion.base_models import load_pipeline
    from meddap.diffusion.denoising import encode_text
    from meddap.diffusion.lora import prompt_conditions

    prompts = ["an ultrasound photo of benign tumor in breast"] * 2 + ["an ultrasound photo of no tumor in breast"] * 2
    info = train(
        str(small_pipeline_dir),
        class_images,
        prompts,
        tmp_path / "shared",
        rank=2,
        steps=2,
        batch_size=2,
        lr=1e-3,
        resolution=32,
        seed=0,
    )
    assert (tmp_path / "shared" / LORA_WEIGHT_NAME).is_file() and sorted(info["prompt"]) == sorted(set(prompts))
    cpu = torch.device("cpu")
    pipe = load_pipeline(str(small_pipeline_dir), cpu, torch.float32)
    with torch.no_grad():
        expected = encode_text(pipe.tokenizer, pipe.text_encoder, prompts, cpu).float()
    # What train_lora gives the denoiser: each image's own prompt embedding.
    condition, uncondition = prompt_conditions(pipe, prompts, flip=True, device=cpu)
    assert len(condition) == 8  # 4 images + their flips, one embedding each
    assert torch.allclose(condition[:4], expected, atol=1e-5) and torch.allclose(condition[4:], expected, atol=1e-5)
    assert len(prompt_conditions(pipe, prompts, flip=False, device=cpu)[0]) == 4
    one, _ = prompt_conditions(pipe, prompts[:1] * 4, flip=True, device=cpu)
    assert len(one) == 1 and torch.allclose(one[0], expected[0], atol=1e-5)  # one prompt: broadcast over every latent
    assert len(uncondition) == 1
    with pytest.raises(LoraError, match="one per image"):
        train(str(small_pipeline_dir), class_images, prompts[:3], tmp_path / "bad", steps=1, resolution=32)
