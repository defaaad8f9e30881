"""Build script: the Python packages (fastdeblur, and kernels/ installed as fastdeblur.kernels).

Metadata lives in pyproject.toml. Install with `pip install --no-build-isolation .` so that any
compiled part builds against the torch already installed (see README).
"""

from setuptools import setup

setup(
    packages=["fastdeblur", "fastdeblur.reference", "fastdeblur.kernels"],
    package_dir={"fastdeblur.kernels": "kernels"},
)
