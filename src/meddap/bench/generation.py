"""Generation benchmark: the original scripts' one pipeline call per image against
``meddap.diffusion.sampling.generate_images`` (runners for ``meddap.bench.measure.interleave``)."""

from __future__ import annotations

import copy

import torch

from meddap.bench.measure import SampleCounter, clock, release_memory, since, sync, unet_flops


class BaselineGeneration:
    """The original scripts: one pipeline call per image, LoRA unfused, PNDM, prompt per call."""

    scheduler, batch_size = "pndm", 1
    how = "pipe() per image, unfused LoRA (load_lora_weights), prompt re-encoded per call"

    def __init__(self, args, pipeline_dir, lora_dir, prompt, device, dtype):
        from diffusers import PNDMScheduler

        from meddap.diffusion.base_models import load_pipeline

        self.args, self.prompt, self.device = args, prompt, device
        self.pipe = load_pipeline(pipeline_dir, device, dtype)
        self.pipe.scheduler = PNDMScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.load_lora_weights(str(lora_dir))  # not fused: the peft layers run at every step
        if not any("lora_A" in name for name, _ in self.pipe.unet.named_modules()):
            raise RuntimeError(f"the LoRA {lora_dir} did not load into the baseline UNet")
        self.counter = SampleCounter(self.pipe.unet)

    def _one(self, seed: int, steps: int):
        generator = torch.Generator("cpu").manual_seed(seed)
        return self.pipe(
            self.prompt,
            height=self.args.resolution,
            width=self.args.resolution,
            num_inference_steps=steps,
            guidance_scale=self.args.guidance,
            generator=generator,
        ).images[0]

    def warm_up(self, seeds: list[int]) -> None:
        self._one(seeds[0], self.args.warmup_steps)

    def timed(self, seeds: list[int]) -> tuple[float, float]:
        from tqdm import tqdm

        sync(self.device)
        self.counter.active, start = True, clock()
        for seed in tqdm(seeds, desc="baseline generation", mininterval=5):
            self._one(seed, self.args.steps)
        sync(self.device)
        self.counter.active = False
        return since(start)

    def close(self) -> None:
        self.counter.close()
        del self.pipe


class MeddapGeneration:
    """meddap.diffusion.sampling.generate_images on a pipeline set up as generate_shard sets it up."""

    def __init__(self, args, pipeline_dir, lora_dir, prompt, device, dtype, batch_size: int):
        from meddap.diffusion.base_models import load_pipeline
        from meddap.diffusion.lora import apply_lora
        from meddap.diffusion.sampling import prepare_for_generation, set_scheduler

        self.args, self.prompt, self.device, self.batch_size = args, prompt, device, batch_size
        self.scheduler = args.scheduler
        self.how = (
            f"generate_images batch {batch_size}, fused LoRA (apply_lora), prompt encoded once, "
            f"guidance_reference={args.guidance_reference}"
        )
        # The set-up of meddap.diffusion.generate.generate_shard (kept in step with it).
        self.pipeline = load_pipeline(pipeline_dir, device, dtype)
        self.reference_unet = copy.deepcopy(self.pipeline.unet) if args.guidance_reference == "base" else None
        apply_lora(self.pipeline, lora_dir, args.lora_scale)
        set_scheduler(self.pipeline, args.scheduler)
        self.compiled = prepare_for_generation(self.pipeline, self.reference_unet, args.compile)
        if self.compiled:
            self.how += ", torch.compile"
        # Hooks on a compiled module would be traced into its graph: count a compiled UNet's
        # samples from the loop's shape instead (one or two UNet rows per image and step).
        self.counter = SampleCounter() if self.compiled else SampleCounter(self.pipeline.unet, self.reference_unet)

    def _generate(self, seeds: list[int], steps: int):
        from meddap.diffusion.sampling import generate_images

        return generate_images(
            self.pipeline,
            self.prompt,
            seeds,
            self.args.resolution,
            steps,
            self.args.guidance,
            self.batch_size,
            self.args.negative_prompt,
            self.reference_unet,
        )

    def warm_up(self, seeds: list[int]) -> None:
        # At the timed batch shapes, so that a compiled UNet compiles here and not in the timed work.
        shapes = {len(seeds[i : i + self.batch_size]) for i in range(0, len(seeds), self.batch_size)}
        for size in sorted(shapes, reverse=True):
            self._generate(seeds[:size], self.args.warmup_steps)

    def timed(self, seeds: list[int]) -> tuple[float, float]:
        sync(self.device)
        self.counter.active, start = True, clock()
        self._generate(seeds, self.args.steps)
        sync(self.device)
        self.counter.active = False
        if self.compiled:
            self.counter.samples += len(seeds) * self.args.steps * (2 if self.args.guidance != 1.0 else 1)
        return since(start)

    def close(self) -> None:
        self.counter.close()
        del self.pipeline, self.reference_unet


def generation_flops(pipeline_dir, args, device, dtype) -> int:
    from meddap.diffusion.base_models import load_pipeline
    from meddap.diffusion.denoising import encode_text

    pipe = load_pipeline(pipeline_dir, device, dtype)
    embeds = encode_text(pipe.tokenizer, pipe.text_encoder, [""], device)
    flops = unet_flops(pipe.unet, args.resolution // pipe.vae_scale_factor, embeds)
    del pipe
    release_memory(device)
    return flops
