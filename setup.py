"""Build script: the Python packages plus the C++/CUDA extension `fastdeblur._C`.

Metadata lives in pyproject.toml. The extension builds against the torch already installed, so
install with `pip install --no-build-isolation .`. It always holds the CPU ops; the CUDA sources
join when torch has CUDA and nvcc is found, or FASTDEBLUR_FORCE_CUDA=1. FASTDEBLUR_SKIP_EXT=1
(or no torch at build time) gives a pure-Python install that runs on the reference path. A
build that fails (no C++ compiler, as in slim container images) installs that pure-Python
package too, with a warning, unless FASTDEBLUR_REQUIRE_EXT=1 (CI sets it, so a broken build
fails there).
"""

import os
import sys

from setuptools import setup

PACKAGES = ["fastdeblur", "fastdeblur.reference", "fastdeblur.ops", "fastdeblur.models", "fastdeblur.train",
            "fastdeblur.kernels"]
CPU_SOURCES = ["csrc/fastdeblur.cpp", "csrc/patch_ops.cpp", "csrc/cpu/patch_ops_kernel.cpp", "csrc/cpu/block_cache.cpp",
               "csrc/cpu/winograd.cpp", "csrc/cpu/conv_small_k.cpp", "csrc/cpu/amx_block.cpp"]
CUDA_SOURCES = ["csrc/cuda/register_cuda.cpp", "csrc/cuda/patch_ops_kernel.cu"]


def _flag(name: str) -> bool:
    """A FASTDEBLUR_* switch, read as fastdeblur.errors.env_flag reads them (the package is not
    importable while it builds): 1/true/yes/on or 0/false/no/off, unset meaning off."""
    raw = os.environ.get(name, "").strip().lower()
    if raw not in ("", "0", "false", "no", "off", "1", "true", "yes", "on"):
        raise SystemExit(f"{name} must be 1/true/yes/on or 0/false/no/off, got {os.environ[name]!r}")
    return raw in ("1", "true", "yes", "on")


def extension():
    """(ext_modules, cmdclass, a line describing the configuration)."""
    if _flag("FASTDEBLUR_SKIP_EXT"):
        return [], {}, "extension skipped (FASTDEBLUR_SKIP_EXT=1): pure-Python install"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        return [], {}, "torch is not importable here (build isolation?): pure-Python install"
    force = _flag("FASTDEBLUR_FORCE_CUDA")
    with_cuda = force or (torch.version.cuda is not None and CUDA_HOME is not None)
    cxx = ["-O3", "-g0"]  # the C++ standard is the one torch asks for (BuildExtension adds it)
    link = []
    if "parallel backend: OpenMP" in torch.__config__.parallel_info() and sys.platform.startswith("linux"):
        # at::parallel_for is inline in torch's OpenMP builds and runs serially in code compiled
        # without -fopenmp (torch's extension builder does not add it). Linking -fopenmp names
        # libgomp.so.1, the soname of the runtime torch already loaded, so there is one thread pool.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if with_cuda:
        # nvcc 13 targets sm_75 and newer only (no Pascal/Volta): Ampere and Hopper by default
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext = CUDAExtension("fastdeblur._C", CPU_SOURCES + CUDA_SOURCES, extra_compile_args={
            "cxx": cxx, "nvcc": ["-O3", "-diag-suppress", "3189"]}, extra_link_args=link)
    else:
        ext = CppExtension("fastdeblur._C", CPU_SOURCES, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    kind = f"CPU + CUDA (arch {os.environ['TORCH_CUDA_ARCH_LIST']})" if with_cuda else "CPU only"
    ext.optional = not _flag("FASTDEBLUR_REQUIRE_EXT")
    line = f"torch {torch.__version__}, CUDA_HOME {CUDA_HOME}, extension fastdeblur._C: {kind}" + (
        "" if ext.optional else ", required (FASTDEBLUR_REQUIRE_EXT=1)")

    class BuildOptional(BuildExtension):
        """torch's builder; when the extension is optional, a failed build (no C++ compiler: torch
        checks it first; or a compile error) leaves it out with a warning instead of failing."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as e:  # CalledProcessError, FileNotFoundError, RuntimeError from ninja, ...
                if not all(x.optional for x in self.extensions):
                    raise
                self.warn(f"building fastdeblur._C failed ({type(e).__name__}: {e}); installing fastdeblur "
                          "without its C++ extension: the plain PyTorch path runs instead (fastdeblur.has_ext() "
                          "is False). Install a C++ compiler and reinstall to build it.")

    return [ext], {"build_ext": BuildOptional.with_options(use_ninja=True)}, line


ext_modules, cmdclass, config = extension()
print(f"fastdeblur build configuration: {config}")
setup(
    packages=PACKAGES,
    package_dir={"fastdeblur.kernels": "kernels"},
    # fastdeblur's own weights (weights.BUNDLED_DIR); py.typed: the public API's annotations are for type checkers
    package_data={"fastdeblur": ["_bundled/*.safetensors", "py.typed"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
