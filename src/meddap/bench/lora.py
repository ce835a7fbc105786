"""LoRA training benchmark: the diffusers text-to-image LoRA example against ``meddap.diffusion.lora.train_lora``
(runners for ``meddap.bench.measure.interleave``)."""

from __future__ import annotations

import time

import torch

from meddap.bench.measure import StampedCall, clock, since, sync, unet_flops


class BaselineTraining:
    """The diffusers text-to-image LoRA example: encode image and prompt at every step, batch 1."""

    batch_size = 1
    how = "diffusers LoRA example: VAE-encode image + text-encode prompt every step"

    def __init__(self, args, pipeline_dir, image_paths, prompt, device, dtype, out_dir):
        from diffusers import DDPMScheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig
        from PIL import Image
        from torchvision import transforms

        from meddap.diffusion.base_models import load_pipeline

        self.args, self.prompt, self.device, self.dtype, self.out_dir = args, prompt, device, dtype, out_dir
        self.pipe = load_pipeline(pipeline_dir, device, dtype)
        unet = self.pipe.unet
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        unet.requires_grad_(False)
        self.pipe.vae.requires_grad_(False)
        self.pipe.text_encoder.requires_grad_(False)
        torch.manual_seed(args.seed)
        unet.add_adapter(
            LoraConfig(
                r=args.rank, lora_alpha=args.alpha, init_lora_weights="gaussian", target_modules=args.target_modules
            )
        )
        cast_training_params(unet, dtype=torch.float32)
        self.parameters = [p for p in unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=args.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.preprocess = transforms.Compose(
            [
                transforms.Resize(args.resolution, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(args.resolution),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )
        self.dataset = [Image.open(path).convert("RGB") for path in image_paths]  # decoded once (kind to the baseline)
        self.generator = torch.Generator().manual_seed(args.seed)
        self.amp = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        unet.train()

    def _steps(self, n: int, desc: str) -> None:
        from tqdm import tqdm

        pipe, device = self.pipe, self.device
        unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        for _ in tqdm(range(n), desc=desc, mininterval=5):
            index = int(torch.randint(0, len(self.dataset), (1,), generator=self.generator))
            pixel_values = self.preprocess(self.dataset[index])[None].to(device, self.dtype)
            input_ids = tokenizer(
                [self.prompt],
                max_length=tokenizer.model_max_length,
                padding="max_length",
                truncation=True,
                return_tensors="pt",
            ).input_ids
            latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(
                0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device
            ).long()
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(input_ids.to(device), return_dict=False)[0]
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.amp):
                prediction = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(prediction.float(), noise.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
            loss.item()  # the example logs the loss every step (a device sync)

    def warm_up(self, steps: int) -> None:
        if self.args.lora_warmup:
            self._steps(self.args.lora_warmup, "baseline LoRA warm-up")

    def timed(self, steps: int) -> tuple[float, float]:
        sync(self.device)
        start = clock()
        self._steps(steps, "baseline LoRA")
        return since(start)

    def train_flops(self) -> int:
        """FLOPs of one forward+backward of the LoRA UNet on one sample."""
        embeds = self.pipe.text_encoder(
            self.pipe.tokenizer([self.prompt], padding="max_length", return_tensors="pt").input_ids.to(self.device)
        )[0]
        return unet_flops(self.pipe.unet, self.args.resolution // self.pipe.vae_scale_factor, embeds, backward=True)

    def close(self) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.pipe.unet))
        StableDiffusionPipeline.save_lora_weights(self.out_dir, unet_lora_layers=state, safe_serialization=True)
        del self.pipe, self.optimizer, self.parameters


class MeddapTraining(StampedCall):
    """meddap.diffusion.lora.train_lora itself (one call per round: load, cache latents + text, warm-up, steps)."""

    def __init__(self, args, pipeline_dir, image_paths, prompt, device, out_dir):
        super().__init__()
        self.args, self.pipeline_dir, self.image_paths, self.prompt = args, pipeline_dir, image_paths, prompt
        self.device, self.out_dir = device, out_dir
        self.batch_size = args.lora_batch_size
        self.how = f"train_lora: latents (both flips) + text embedding cached once, batch {self.batch_size}"

    def timed(self, steps: int) -> tuple[float, float]:
        from meddap.diffusion.lora import train_lora
        from meddap.settings.stages import LoraSettings, RuntimeSettings

        # stamps[0]: the start of train_lora's loop; stamps[k]: the end of step k (after its loss.item()).
        warmup, stamps = self.args.lora_warmup, []
        start = time.perf_counter()
        settings = LoraSettings(
            rank=self.args.rank,
            alpha=self.args.alpha,
            target_modules=tuple(self.args.target_modules),
            steps=warmup + steps,
            batch_size=self.batch_size,
            lr=self.args.lr,
            resolution=self.args.resolution,
            flip=True,
            checkpoint_every=0,
        )
        train_lora(
            str(self.pipeline_dir),
            self.image_paths,
            self.prompt,
            self.out_dir,
            settings,
            self.args.seed,
            RuntimeSettings(device=str(self.device), precision=self.args.dtype),
            on_step=lambda step, loss: stamps.append(clock()),
        )
        return self.stamped(stamps, warmup, steps, start, "train_lora steps")
