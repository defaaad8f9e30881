"""Training: synthetic GoPro-like blur, datasets, and (to come) the trainer and export."""

from .blur import BlurConfig, camera_path, synthesize

__all__ = ["BlurConfig", "camera_path", "synthesize"]
