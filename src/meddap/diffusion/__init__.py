"""Stages 1 and 2, Stable Diffusion: where the base model comes from (base_models), the SD v1.5
architecture (sd15) and the small embedded model (small_model, tokenizer, pipeline_folder),
pretraining (pretraining, denoising), LoRA training (lora), sampling and one shard of
synthetic images (sampling, generate), and the adjectives' image operations (adjectives).
"""
