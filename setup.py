"""Build script: the Python packages plus the C++/CUDA extension `fastdeblur._C`.

Metadata lives in pyproject.toml. The extension builds against the torch already installed, so
install with `pip install --no-build-isolation .`. It always holds the CPU ops; the CUDA sources
join when torch has CUDA and nvcc is found, or FASTDEBLUR_FORCE_CUDA=1. FASTDEBLUR_SKIP_EXT=1
(or no torch at build time) gives a pure-Python install that runs on the reference path.
"""

import os

from setuptools import setup

PACKAGES = ["fastdeblur", "fastdeblur.reference", "fastdeblur.ops", "fastdeblur.models", "fastdeblur.train",
            "fastdeblur.kernels"]
CPU_SOURCES = ["csrc/fastdeblur.cpp", "csrc/patch_ops.cpp", "csrc/cpu/patch_ops_kernel.cpp"]
CUDA_SOURCES = ["csrc/cuda/register_cuda.cpp", "csrc/cuda/patch_ops_kernel.cu"]


def extension():
    """(ext_modules, cmdclass, a line describing the configuration)."""
    if os.environ.get("FASTDEBLUR_SKIP_EXT", "0") not in ("", "0"):
        return [], {}, "extension skipped (FASTDEBLUR_SKIP_EXT=1): pure-Python install"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        return [], {}, "torch is not importable here (build isolation?): pure-Python install"
    force = os.environ.get("FASTDEBLUR_FORCE_CUDA", "0") not in ("", "0")
    with_cuda = force or (torch.version.cuda is not None and CUDA_HOME is not None)
    cxx = ["-O3", "-g0"]  # the C++ standard is the one torch asks for (BuildExtension adds it)
    if with_cuda:
        # nvcc 13 targets sm_75 and newer only (no Pascal/Volta): Ampere and Hopper by default
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext = CUDAExtension("fastdeblur._C", CPU_SOURCES + CUDA_SOURCES, extra_compile_args={
            "cxx": cxx, "nvcc": ["-O3", "-diag-suppress", "3189"]})
    else:
        ext = CppExtension("fastdeblur._C", CPU_SOURCES, extra_compile_args={"cxx": cxx})
    kind = f"CPU + CUDA (arch {os.environ['TORCH_CUDA_ARCH_LIST']})" if with_cuda else "CPU only"
    line = f"torch {torch.__version__}, CUDA_HOME {CUDA_HOME}, extension fastdeblur._C: {kind}"
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}, line


ext_modules, cmdclass, config = extension()
print(f"fastdeblur build configuration: {config}")
setup(
    packages=PACKAGES,
    package_dir={"fastdeblur.kernels": "kernels"},
    package_data={"fastdeblur": ["_bundled/*.safetensors"]},  # fastdeblur's own weights (weights.BUNDLED_DIR)
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
