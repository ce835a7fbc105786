"""meddap: Stable Diffusion (LoRA) data augmentation for small medical-image datasets, measured honestly."""

__version__ = "0.1.0"
