"""fastdeblur: fast, trustworthy motion deblurring with DMPHN.

    import fastdeblur
    sharp = fastdeblur.deblur("blurry.png")        # numpy / torch / PIL / path in, same kind out
    fastdeblur.deblur_video("shaky.mp4", "sharp.mp4")  # frame by frame, sound kept (needs PyAV)

Nothing here compiles code or touches CUDA at import time.
"""

# _heap registers its fork handler (DataLoader workers start with no forward running)
from . import _heap, metrics  # noqa: F401
from ._ext import has_cuda_ext, has_ext
from ._version import __version__
from .api import clear_model_cache, deblur, load_model
from .errors import InputError, WeightsError
from .video import deblur_video
from .weights import list_models

__all__ = [
    "InputError", "WeightsError", "__version__", "clear_model_cache", "deblur", "deblur_video", "has_cuda_ext",
    "has_ext", "list_models", "load_model", "metrics",
]
