"""The source distribution carries everything setup.py compiles: a user who installs from an
sdist (pip's fallback when no wheel fits) gets the extension, not a silent pure-PyTorch install."""

import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "csrc", "fastdeblur", "kernels", "tests",
         "benchmarks", "examples", "docs")

pytestmark = pytest.mark.skipif(not (ROOT / "setup.py").is_file() or not (ROOT / "csrc").is_dir(),
                                reason="needs the source checkout (setup.py, csrc/)")


def test_sdist_has_every_extension_source_and_header(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "*.pyc")
    for part in PARTS:
        p = ROOT / part
        if p.is_dir():
            shutil.copytree(p, src / part, ignore=ignore)
        elif p.is_file():
            shutil.copy2(p, src / part)
    run = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=src,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {p.relative_to(src).as_posix() for p in (src / "csrc").rglob("*") if p.is_file()}
    assert wanted and not wanted - names, f"missing from the sdist: {sorted(wanted - names)}"
    assert {"setup.py", "pyproject.toml", "fastdeblur/__init__.py", "kernels/__init__.py"} <= names


@pytest.mark.skipif(shutil.which("g++") is None or platform.machine() not in ("x86_64", "AMD64"),
                    reason="needs g++ on x86-64")
def test_the_readmes_pipe_benchmark_compiles(tmp_path):
    """benchmarks/cpu_pipes.cpp builds with the README's command line (running it is a benchmark)."""
    src = ROOT / "benchmarks" / "cpu_pipes.cpp"
    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines() if "cpu_pipes.cpp" in ln and "g++" in ln)
    flags = [f for f in line.split("&&")[0].split() if f.startswith("-m") or f.startswith("-O")]
    assert "-mavx512bf16" in flags
    run = subprocess.run(["g++", *flags, "-Wall", "-Werror", "-o", str(tmp_path / "cpu_pipes"), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("command", ["fastdeblur.cli", "fastdeblur.train.cli", "fastdeblur.train.recipe",
                                     "fastdeblur.train.probe", *(f"benchmarks/{name}.py" for name in (
                                         "ab_ext", "cli_throughput", "first_call", "interleaved", "layer_choice",
                                         "memory", "summarize", "tune_kernels", "video_throughput")),
                                     "examples/blur_gallery.py"])
def test_every_command_prints_its_help(command, monkeypatch, capsys):
    """`--help` of every command and script (one had a help string that made argparse raise)."""
    import importlib
    import runpy

    monkeypatch.setattr(sys, "argv", [command, "--help"])
    with pytest.raises(SystemExit) as e:
        if command.endswith(".py"):
            runpy.run_path(str(ROOT / command), run_name="__main__")
        else:
            importlib.import_module(command).main(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out
