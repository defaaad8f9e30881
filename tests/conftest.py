"""Shared fixtures: the data folder, an isolated weights cache, RNG seeding, markers.

Tests never touch the user's ~/.cache: FASTDEBLUR_HOME points at a per-session temp folder,
filled on first use through the real (verified) download path from the data folder's copy of the
authors' files (a file:// mirror). Without ../shared/data those tests skip with one line.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter; it must be
# switched on before any kernel module is imported (fastdeblur imports them lazily).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # Triton decides at import whether its own library functions (tl.zeros, ...) are interpreted:
    # imported first by a test that unsets the variable (to check the error without a GPU), it
    # stayed in compiled mode for the whole process and every later interpreted kernel failed
    # ("Cannot call @triton.jit'd outside of the scope of a kernel"). Import it now, interpreted.
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:  # the paths without Triton are tested then
        pass

REPO = Path(__file__).resolve().parents[1]


def benchmark_module(name: str):
    """benchmarks/<name>.py (the benchmarks are a folder of the repo, not of the package)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"benchmarks.{name}")


def data_root() -> Path:
    env = os.environ.get("FASTDEBLUR_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


DATA = data_root()
HAVE_DATA = (DATA / "dmphn_official" / "checkpoints").is_dir()
NO_DATA = f"no test data at {DATA} (set FASTDEBLUR_DATA)"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_data = pytest.mark.skip(reason=NO_DATA)
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "needs_cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "needs_data" in item.keywords and not HAVE_DATA:
            item.add_marker(skip_data)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    home = tmp_path_factory.mktemp("fastdeblur_home")
    old = {k: os.environ.get(k) for k in ("FASTDEBLUR_HOME", "FASTDEBLUR_OFFICIAL_URL", "FASTDEBLUR_BACKEND",
                                          "FASTDEBLUR_OFFLINE")}
    os.environ["FASTDEBLUR_HOME"] = str(home)
    os.environ.pop("FASTDEBLUR_BACKEND", None)
    os.environ.pop("FASTDEBLUR_OFFLINE", None)
    if HAVE_DATA:
        os.environ["FASTDEBLUR_OFFICIAL_URL"] = (DATA / "dmphn_official").as_uri()
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _seeded():
    state = torch.get_rng_state()
    np_state = np.random.get_state()
    torch.manual_seed(0)
    np.random.seed(0)
    yield
    torch.set_rng_state(state)
    np.random.set_state(np_state)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not HAVE_DATA:
        pytest.skip(NO_DATA)
    return DATA


@pytest.fixture(scope="session")
def default_model(data_dir):
    """The authors' DMPHN(1-2-4) on CPU, loaded once through the cache."""
    import fastdeblur

    return fastdeblur.load_model("dmphn-1-2-4-gopro", device="cpu")
