"""Training: synthetic GoPro-like blur (`blur`), datasets (`data`), pairs from slow-motion video
(`video_pairs`), the identity start (`init`), the trainer (`trainer`), export (`export`), the
default model's recipe and probe."""

from .blur import BlurConfig, camera_path, synthesize, synthesize_pair
from .init import identity_init
from .video_pairs import make_video_pairs

__all__ = ["BlurConfig", "camera_path", "identity_init", "make_video_pairs", "synthesize", "synthesize_pair"]
