"""Training: synthetic GoPro-like blur (`blur`), datasets (`data`), the identity start (`init`),
the trainer (`trainer`), export (`export`), the default model's recipe and probe."""

from .blur import BlurConfig, camera_path, synthesize, synthesize_pair
from .init import identity_init

__all__ = ["BlurConfig", "camera_path", "identity_init", "synthesize", "synthesize_pair"]
