"""The fastdeblur command: files, folders, overwrite policy, bad files, exit codes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastdeblur import InputError, deblur, load_model
from fastdeblur.cli import main
from fastdeblur.io import read_image, write_image


def _img(path, size=(24, 32), value=None):
    a = np.random.randint(0, 256, (*size, 3), dtype=np.uint8) if value is None else np.full((*size, 3), value, np.uint8)
    return write_image(path, a)


def test_list_models(capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "dmphn-1-2-4-gopro" in out and "stack4-dmphn-gopro" in out and "default" in out
    assert "fastdeblur-default       bundled" in out


def test_usage_errors(capsys, tmp_path):
    assert main([]) == 2
    assert "at least one INPUT" in capsys.readouterr().err
    assert main([str(_img(tmp_path / "a.png"))]) == 2
    assert "-o/--output is required" in capsys.readouterr().err


@pytest.mark.parametrize("variable,value", [("FASTDEBLUR_MEMORY_BUDGET", "abc"), ("FASTDEBLUR_MAX_PIXELS", "lots"),
                                            ("FASTDEBLUR_WINOGRAD", "maybe")])
def test_a_bad_setting_stops_the_run_once(tmp_path, capsys, monkeypatch, variable, value):
    """A FASTDEBLUR_* variable no file can run with is said once and ends the run (exit 2), instead
    of failing every file of a folder alike."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _img(folder / name)
    monkeypatch.setenv(variable, value)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", "fastdeblur-default", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1 and f"fastdeblur: error: {variable} " in err and "3 left undone" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


@pytest.mark.parametrize("option,value,says", [
    ("--png-level", "12", "expected an integer from 0 to 9, got 12"),
    ("--png-level", "x", "expected an integer from 0 to 9, got 'x'"),
    ("--quality", "0", "expected an integer from 1 to 100, got 0"),
    ("--tile", "100", "0 (never tile) or at least 128 pixels, got 100"),  # once, before any file
    ("--tile", "big", "expected a number of pixels, got 'big'")])
def test_numeric_options_are_checked_in_one_line(tmp_path, capsys, option, value, says):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        _img(folder / name)
    with pytest.raises(SystemExit) as e:
        main([str(folder), "-o", str(tmp_path / "out"), option, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"fastdeblur: error: argument {option}: {says}\n" in err
    assert err.count("error") == 1  # said once, not for each file
    assert not (tmp_path / "out").exists()


@pytest.mark.needs_data
def test_png_level_reaches_the_writer(tmp_path):
    src = _img(tmp_path / "in.png", size=(96, 128), value=128)
    assert main([str(src), "-o", str(tmp_path / "l0.png"), "-q", "--png-level", "0"]) == 0
    assert main([str(src), "-o", str(tmp_path / "l9.png"), "-q", "--png-level", "9"]) == 0
    assert (tmp_path / "l0.png").stat().st_size > 2 * (tmp_path / "l9.png").stat().st_size
    assert np.array_equal(read_image(tmp_path / "l0.png"), read_image(tmp_path / "l9.png"))


def test_quality_reaches_the_writer_and_is_checked(tmp_path, capsys):
    src = _img(tmp_path / "in.png", size=(96, 128))
    args = ["--model", "fastdeblur-default", "-q"]
    assert main([str(src), "-o", str(tmp_path / "q30.jpg"), "--quality", "30", *args]) == 0
    assert main([str(src), "-o", str(tmp_path / "q95.jpg"), *args]) == 0  # the default
    assert (tmp_path / "q95.jpg").stat().st_size > 1.5 * (tmp_path / "q30.jpg").stat().st_size
    with pytest.raises(SystemExit) as e:
        main([str(src), "-o", str(tmp_path / "x.jpg"), "--quality", "0"])
    assert e.value.code == 2 and "--quality" in capsys.readouterr().err


@pytest.mark.needs_data
def test_single_file(tmp_path, capsys):
    src = _img(tmp_path / "in.png")
    assert main([str(src), "-o", str(tmp_path / "out.png"), "-q"]) == 0
    out = read_image(tmp_path / "out.png")
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.needs_data
def test_folder_and_several_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        _img(folder / f"{i}.png")
    (folder / "readme.txt").write_text("not an image")
    assert main([str(folder), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    extra = _img(tmp_path / "x.jpg")
    assert main([str(folder / "0.png"), str(extra), "-o", str(tmp_path / "two"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["0.png", "x.jpg"]


def test_recursive_keeps_the_subfolders(tmp_path, capsys):
    """-r walks subfolders (not hidden ones, not the output folder inside the input), and the
    outputs keep the tree; without -r only the folder's own files are read, and a folder whose
    images all lie in subfolders says to use --recursive."""
    root = tmp_path / "shots"
    for rel in ["a.png", "day1/b.jpg", "day1/x/c.png", ".cache/h.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _img(root / rel)
    out = root / "sharp"  # inside the input tree: its files must not be read back as inputs
    _img(out / "old.png")
    args = ["--model", "fastdeblur-default", "-q"]
    assert main([str(root), "-r", "-o", str(out), *args]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "day1/b.jpg", "day1/x/c.png", "old.png"]
    assert main([str(root / "day1"), "-o", str(tmp_path / "flat"), *args]) == 0
    assert [p.name for p in (tmp_path / "flat").rglob("*")] == ["b.jpg"]
    assert main([str(root / "day1" / "x" / ".."), "-r", "-o", str(tmp_path / "dots"), *args]) == 0
    assert sorted(p.relative_to(tmp_path / "dots").as_posix()
                  for p in (tmp_path / "dots").rglob("*.*")) == ["b.jpg", "x/c.png"]
    capsys.readouterr()
    (tmp_path / "deep" / "only").mkdir(parents=True)
    _img(tmp_path / "deep" / "only" / "d.png")
    assert main([str(tmp_path / "deep"), "-o", str(tmp_path / "o3"), *args]) == 1
    assert "deep: folder holds no images" in (err := capsys.readouterr().err) and "--recursive" in err


def test_files_that_are_not_images_are_counted_and_hidden_ones_left_out(tmp_path, capsys, monkeypatch):
    """A folder of iPhone HEIC photos must not pass in silence where pillow-heif is missing: the
    other files are named by suffix once (not with -q), with how to read HEIC, and a folder
    holding none we read says what it holds. Hidden files (macOS's ._x.jpg resource forks,
    .DS_Store) are neither read nor counted."""
    import fastdeblur.io

    monkeypatch.setattr(fastdeblur.io, "_heif_state", [False])
    folder = tmp_path / "in"
    folder.mkdir()
    _img(folder / "a.png")
    for name in ["b.heic", "c.HEIC", "notes.txt", "._a.jpg", ".DS_Store"]:
        (folder / name).write_bytes(b"not an image we read")
    args = ["--model", "fastdeblur-default"]
    assert main([str(folder), "-o", str(tmp_path / "out"), *args]) == 0
    assert ("not images fastdeblur reads, left alone: 2 .heic files (pip install pillow-heif (or fastdeblur[heif])), "
            "1 .txt file") in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]
    assert main([str(folder), "-o", str(tmp_path / "out2"), "-q", *args]) == 0
    assert capsys.readouterr().err == ""
    (folder / "a.png").unlink()
    assert main([str(folder), "-o", str(tmp_path / "out3"), *args]) == 1
    assert "folder holds no images (.png" in (err := capsys.readouterr().err) and "it holds 2 .heic files" in err


def test_an_output_ending_in_a_slash_is_a_folder(tmp_path):
    src = _img(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / "new") + "/", "--model", "fastdeblur-default", "-q"]) == 0
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a.png"]


def test_a_cpu_run_follows_each_image(tmp_path, monkeypatch):
    """On a CPU each image gets a progress bar of its own (deblur's `progress`); -q has none."""
    import fastdeblur.api

    calls, real = [], fastdeblur.api.deblur
    monkeypatch.setattr(fastdeblur.api, "deblur", lambda *a, progress=None, **k: calls.append(progress) or real(
        *a, progress=progress, **k))
    src = _img(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / "b.png"), "--model", "fastdeblur-default"]) == 0
    assert main([str(src), "-o", str(tmp_path / "c.png"), "--model", "fastdeblur-default", "-q"]) == 0
    assert callable(calls[0]) and calls[1] is None


def test_metadata_is_kept_unless_stripped(tmp_path):
    """A photo's ICC profile and EXIF reach its output (orientation applied once, tag reset to 1);
    --strip-metadata writes the pixels only."""
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "TestCam"
    src = tmp_path / "photo.jpg"
    Image.fromarray(np.random.randint(0, 256, (24, 40, 3), dtype=np.uint8)).save(src, icc_profile=icc, exif=exif)
    args = ["--model", "fastdeblur-default", "-q"]
    for out, strip in ((tmp_path / "kept.jpg", []), (tmp_path / "kept.png", []),
                       (tmp_path / "bare.jpg", ["--strip-metadata"])):
        assert main([str(src), "-o", str(out), *args, *strip]) == 0
        with Image.open(out) as im:
            assert im.size == (24, 40)  # turned upright once
            got = im.getexif()
            if strip:
                assert "icc_profile" not in im.info and not got
            else:
                assert im.info["icc_profile"] == icc and got[0x010F] == "TestCam" and got[0x0112] == 1


def test_read_ahead_skips_what_will_not_run(tmp_path, monkeypatch):
    """Files are read ahead on a thread, but never those whose output is skipped or refused, and
    with several writer threads every output still lands once, under its own name."""
    from fastdeblur import cli, io

    folder = tmp_path / "in"
    for i in range(7):
        _img(folder / f"{i}.png", value=10 * i)
    out = tmp_path / "out"
    for i in (1, 2, 5):  # already done: skipped
        _img(out / f"{i}.png", value=1)
    seen = []
    real = io.read_image
    monkeypatch.setattr(io, "read_image", lambda p: seen.append(p.name) or real(p))
    monkeypatch.setattr(cli, "_io_threads", lambda: (2, 3))
    assert main([str(folder), "-o", str(out), "--skip-existing", "--model", "fastdeblur-default", "-q"]) == 0
    assert sorted(seen) == ["0.png", "3.png", "4.png", "6.png"]
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in range(7)]
    assert all(read_image(out / f"{i}.png").max() == 1 for i in (1, 2, 5))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_keeps_what_is_done(tmp_path, capsys, monkeypatch, stop):
    """Ctrl-C during the third image: the outputs already deblurred are written whole, nothing new
    starts, no temp file is left, and the exit status is 130 with a count of what is left.
    SIGTERM (`kill`, `docker stop`, a scheduler's stop) does the same with status 143: until
    2026-12-06 it killed the command where it stood (a video's temp file stayed behind). Its
    handler is the command's only while it runs."""
    import signal

    from fastdeblur import api

    folder = tmp_path / "in"
    for i in range(5):
        _img(folder / f"{i}.png")
    calls = []

    def stopped_on_the_third(img, model, **kw):
        calls.append(1)
        if len(calls) == 3:
            if stop == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return img

    monkeypatch.setattr(api, "deblur", stopped_on_the_third)
    monkeypatch.setattr(api, "load_model", lambda *a, **k: torch.nn.Linear(1, 1))
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out), "-q"]) == (130 if stop == "ctrl-c" else 143)
    assert signal.getsignal(signal.SIGTERM) is before
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]
    assert all(read_image(out / n).shape == (24, 32, 3) for n in ("0.png", "1.png"))
    assert "interrupted: 2 written, 0 skipped, 0 failed, 3 left undone" in capsys.readouterr().err
    assert len(calls) == 3


def test_an_output_format_without_codec_fails_before_the_network(tmp_path, capsys, monkeypatch):
    from PIL import features

    from fastdeblur import api

    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "avif" else real(name))
    monkeypatch.setattr(api, "deblur", lambda *a, **k: pytest.fail("the network ran"))
    monkeypatch.setattr(api, "load_model", lambda *a, **k: torch.nn.Linear(1, 1))  # never run
    src = _img(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / "a.avif"), "-q"]) == 1
    assert "a.avif: this Pillow build has no AVIF codec" in capsys.readouterr().err
    assert not (tmp_path / "a.avif").exists()


def test_inputs_in_formats_not_written_here_become_png(tmp_path, capsys):
    """GIF, PPM and TGA inputs (read through Pillow, not written here) come out as PNG in a folder
    and beside their inputs, as deblur() gives their bytes back; named as a single output, such a
    format is a usage error that lists the formats written, before any work."""
    from PIL import Image

    model = load_model("fastdeblur-default")
    a = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for name in ("x.ppm", "y.tga", "z.gif"):
        Image.fromarray(a).save(tmp_path / name)
    inputs = [str(tmp_path / n) for n in ("x.ppm", "y.tga", "z.gif")]
    assert main([*inputs, "-o", str(tmp_path / "out"), "--model", "fastdeblur-default", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "y.png", "z.png"]
    assert np.array_equal(read_image(tmp_path / "out" / "x.png"), deblur(a, model))
    assert main([inputs[0], "--suffix", "_s", "--model", "fastdeblur-default", "-q"]) == 0
    assert (tmp_path / "x_s.png").is_file()
    for out, says in (("o.ppm", "unsupported output format '.ppm' (use one of .png, "),
                      ("o", "no file suffix to tell the format (use one of .png, ")):
        assert main([inputs[0], "-o", str(tmp_path / out)]) == 2
        assert f"output {tmp_path / out}: {says}" in capsys.readouterr().err


def test_a_file_named_twice_runs_once(tmp_path, capsys):
    """a.png a.png, or a.png and its folder (overlapping globs): one output, no "already written
    from another input" error; two names of one file (a link) stay two outputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    a = _img(folder / "a.png")
    (folder / "link.png").symlink_to(a)
    args = ["--model", "fastdeblur-default"]
    assert main([str(a), str(a), "-o", str(tmp_path / "out") + "/", *args]) == 0
    assert main([str(a), str(folder), "-o", str(tmp_path / "out2"), *args]) == 0
    assert "fastdeblur: 2 written, 0 skipped, 0 failed" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["a.png", "link.png"]


def test_a_bug_on_one_file_fails_that_file_only(tmp_path, capsys, monkeypatch):
    """An exception no file should raise (a bug, such as the AttributeError a codec-less video
    stream raised) is said as one and fails its file; the batch goes on."""
    import fastdeblur.io as fio

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _img(folder / name)
    real = fio.read_image

    def read_image(src):
        if str(src).endswith("b.png"):
            raise AttributeError("'NoneType' object has no attribute 'name'")
        return real(src)

    monkeypatch.setattr(fio, "read_image", read_image)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", "fastdeblur-default", "-q"]) == 1
    err = capsys.readouterr().err
    assert "b.png: unexpected AttributeError: 'NoneType' object has no attribute 'name' (a fastdeblur bug" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_several_inputs_need_a_folder(tmp_path, capsys):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png")
    assert main([str(a), str(b), "-o", str(tmp_path / "out.png"), "-q"]) == 2
    assert "looks like a file name" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.needs_data
def test_overwrite_policy(tmp_path, capsys):
    src = _img(tmp_path / "in.png")
    dst = _img(tmp_path / "out.png", value=3)
    assert main([str(src), "-o", str(dst), "-q"]) == 1
    assert "exists (use --overwrite or --skip-existing)" in capsys.readouterr().err
    assert read_image(dst).max() == 3
    assert main([str(src), "-o", str(dst), "-q", "--skip-existing"]) == 0
    assert read_image(dst).max() == 3
    assert main([str(src), "-o", str(dst), "-q", "--overwrite"]) == 0
    assert read_image(dst).max() != 3 or read_image(dst).min() != 3


@pytest.mark.needs_data
def test_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = _img(tmp_path / "in.png", value=50)
    assert main([str(src), "-o", str(src), "--overwrite", "-q"]) == 1
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert read_image(src).max() == 50
    assert main([str(tmp_path), "-o", str(tmp_path), "--overwrite", "-q"]) == 1
    assert read_image(src).max() == 50
    # a folder of several as its own output: one usage error, before any model loads
    _img(tmp_path / "in2.png", value=60)
    capsys.readouterr()
    assert main([str(tmp_path), "-o", str(tmp_path), "--overwrite", "-q"]) == 2
    assert capsys.readouterr().err == (f"fastdeblur: error: every output in {tmp_path} would replace its input: add "
                                       "--suffix TEXT (e.g. --suffix _sharp) or name another folder\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "in2.png"]


@pytest.mark.needs_data
def test_bad_files_are_named_and_the_rest_go_on(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _img(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    _img(folder / "c.png")
    _img(folder / "d.png", size=(4, 4))  # tiny is fine
    (folder / "e.png").write_bytes(b"")
    code = main([str(folder), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "b.png: not a readable image" in err and "missing.png: no such file or folder\n" in err
    assert f"{folder / 'e.png'}: empty file" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png", "d.png"]


@pytest.mark.needs_data
def test_a_failed_write_is_named_and_counted(tmp_path, capsys, monkeypatch):
    """Writes run on a background thread; their errors still reach the report and exit status."""
    from fastdeblur import io

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _img(folder / name)
    real = io.write_image

    def flaky(path, img, **kw):
        if path.name == "b.png":
            raise OSError(f"{path}: disk full")
        return real(path, img, **kw)

    monkeypatch.setattr(io, "write_image", flaky)
    assert main([str(folder), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "b.png: disk full" in err and "2 written, 0 skipped, 1 failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


@pytest.mark.needs_data
def test_python_dash_m_and_console_script(tmp_path):
    src = _img(tmp_path / "in.png")
    r = subprocess.run([sys.executable, "-m", "fastdeblur", str(src), "-o", str(tmp_path / "o.png")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 written, 0 skipped, 0 failed" in r.stderr
    assert read_image(tmp_path / "o.png").shape == (24, 32, 3)


def test_damaged_files_are_one_line_each_as_a_user_sees_them(tmp_path):
    """A folder with damaged TIFFs, run as a process: each gets one "fastdeblur: error" line and
    nothing else reaches stderr (Pillow's "Tag data larger than file" warnings and tifffile's
    log records printed raw lines beside them)."""
    from fastdeblur.io import encode_image

    folder = tmp_path / "in"
    folder.mkdir()
    good = bytearray(encode_image(np.zeros((37, 53, 3), np.uint8), ".tif"))
    for i, at in enumerate((63, 64)):  # the PhotometricInterpretation tag's count: its value lies past the end
        bad = bytearray(good)
        bad[at] = 102
        (folder / f"bad{i}.tif").write_bytes(bytes(bad))
    _img(folder / "ok.png")
    r = subprocess.run([sys.executable, "-m", "fastdeblur", str(folder), "-o", str(tmp_path / "out"), "-q",
                        "--model", "fastdeblur-default"], capture_output=True, text=True, timeout=300)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and all(line.startswith("fastdeblur: ") for line in lines), r.stderr
    assert sum("bad" in line and "not a readable image" in line for line in lines) == 2


def test_missing_weights_fail_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTDEBLUR_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setenv("FASTDEBLUR_OFFLINE", "1")
    src = _img(tmp_path / "in.png")
    assert main([str(src), "-o", str(tmp_path / "o.png"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "not available" in err and "--model fastdeblur-default" in err
    assert not (tmp_path / "o.png").exists()
    # the weights that ship with the package need neither the cache nor the network
    assert main([str(src), "-o", str(tmp_path / "o.png"), "-q", "--model", "fastdeblur-default"]) == 0
    assert read_image(tmp_path / "o.png").shape == (24, 32, 3)


def test_weights_file_option(tmp_path, capsys):
    import torch

    from fastdeblur.reference import DMPHN
    from fastdeblur.train.export import export_weights

    torch.manual_seed(0)
    w = export_weights(DMPHN((1, 2)).state_dict(), tmp_path / "mine.safetensors", arch="dmphn", levels=(1, 2))
    src = _img(tmp_path / "in.png")
    assert main([str(src), "-o", str(tmp_path / "out.png"), "-q", "--weights", str(w), "--device", "cpu"]) == 0
    expect = deblur(read_image(src), load_model(weights=w, device="cpu"))
    assert np.array_equal(read_image(tmp_path / "out.png"), expect)
    assert main([str(src), "-o", str(tmp_path / "o2.png"), "-q", "--weights", str(w), "--model", "default"]) == 1
    assert "holds a DMPHN(1-2), not dmphn-1-2-4-gopro's DMPHN(1-2-4)" in capsys.readouterr().err
    assert not (tmp_path / "o2.png").exists()
    # a training checkpoint as fastdeblur-train writes it (no EMA yet: its model's weights)
    net = DMPHN((1, 2))
    torch.save({"config": {"arch": "dmphn", "levels": [1, 2], "stages": 4}, "model": net.state_dict(), "ema": None,
                "step": 5}, tmp_path / "last.pt")
    assert main([str(src), "-o", str(tmp_path / "o3.png"), "-q", "--weights", str(tmp_path / "last.pt")]) == 0
    from_ckpt = load_model(weights=tmp_path / "last.pt", device="cpu")
    assert np.array_equal(read_image(tmp_path / "o3.png"), deblur(read_image(src), from_ckpt))
    held = load_model(weights=tmp_path / "last.pt", dtype="float32").state_dict()
    assert all(torch.equal(held[k], v) for k, v in net.state_dict().items())


def test_half_where_bfloat16_is_emulated_warns_once(tmp_path, capsys, monkeypatch):
    import torch

    from fastdeblur import api
    from fastdeblur.reference import DMPHN
    from fastdeblur.train.export import export_weights

    monkeypatch.setattr(api, "cpu_has_fast_bf16", lambda: False)  # as on an AVX2-only CPU
    w = export_weights(DMPHN((1,)).state_dict(), tmp_path / "w.safetensors", arch="dmphn", levels=(1,))
    srcs = [str(_img(tmp_path / f"in{i}.png")) for i in range(2)]
    assert main([*srcs, "-o", str(tmp_path / "out"), "-q", "--weights", str(w), "--device", "cpu", "--half"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["fastdeblur: warning: this CPU has no bfloat16 arithmetic (AMX or AVX512-BF16), so bfloat16 "
                   "runs emulated: 17x slower than float32 on an AVX2 CPU; float32 is the fast dtype here (the "
                   "default)"]
    assert len(list((tmp_path / "out").iterdir())) == 2 and torch.get_default_dtype() == torch.float32


def test_a_missing_extension_is_one_warning_line(tmp_path, capsys, monkeypatch):
    from fastdeblur import _ext, api
    from fastdeblur.models import winograd
    from fastdeblur.reference import DMPHN
    from fastdeblur.train.export import export_weights

    monkeypatch.setattr(_ext, "_loaded", False)  # as after an install without --no-build-isolation
    monkeypatch.setattr(_ext, "_error", "No module named 'fastdeblur._C'")
    monkeypatch.setattr(api, "_warned_missing_extension", False)
    monkeypatch.setattr(winograd, "lost_without_extension", lambda dtype: True)
    w = export_weights(DMPHN((1,)).state_dict(), tmp_path / "w.safetensors", arch="dmphn", levels=(1,))
    srcs = [str(_img(tmp_path / f"in{i}.png")) for i in range(2)]
    assert main([*srcs, "-o", str(tmp_path / "out"), "-q", "--weights", str(w), "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(
        "fastdeblur: warning: fastdeblur's compiled extension is not installed (No module named 'fastdeblur._C'), "
        "so this CPU runs the network on oneDNN's convolutions alone, 2-3x slower"), err
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_version_names_torch_and_the_extension(capsys, monkeypatch):
    import fastdeblur
    from fastdeblur import _ext

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    lines = capsys.readouterr().out.splitlines()
    assert e.value.code == 0 and lines[:2] == [f"fastdeblur {fastdeblur.__version__}", f"torch {torch.__version__}"]
    assert lines[2].startswith("extension: installed (CPU ops" if _ext.has_ext() else "extension: not installed (")
    assert lines[3].startswith("cpu: bfloat16 by default" if fastdeblur.api.cpu_has_fast_bf16() else "cpu: float32")
    from fastdeblur.models import amx, winograd

    dtype = fastdeblur.api.default_dtype(torch.device("cpu"))
    on_amx = dtype == torch.bfloat16 and amx.preferred() and not winograd.preferred(dtype)
    assert ("on the extension's AMX kernels and oneDNN" in lines[3]) == on_amx
    assert lines[4].startswith("cuda: ") and len(lines) == 5
    monkeypatch.setattr(_ext, "_loaded", False)
    monkeypatch.setattr(_ext, "_error", "No module named 'fastdeblur._C'")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.splitlines()[2] == "extension: not installed (No module named 'fastdeblur._C')"


@pytest.mark.parametrize("option", ["--list-models", "--version"])
def test_text_output_to_a_reader_that_left_is_quiet(option):
    """`fastdeblur --list-models | head -1`: the reader may close the pipe before the rest is
    written; the rest goes nowhere, with no BrokenPipeError traceback (here the pipe is closed
    before the command starts, so every write fails)."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "fastdeblur", option], stdout=w, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_video_options_with_only_images_are_a_usage_error(tmp_path, capsys, monkeypatch):
    """--start, --end and --crf do nothing to images: with images alone (or a pipe) they are a
    usage error instead of being ignored without a word."""
    src = _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    for extra, said in ((["--start", "1"], "--start"), (["--end", "2", "--crf", "20"], "--end, --crf")):
        for inputs, out in (([str(src)], tmp_path / "o.png"), ([str(tmp_path)], tmp_path / "out")):
            assert main([*inputs, "-o", str(out), *extra]) == 2
            assert capsys.readouterr().err == f"fastdeblur: error: {said}: for videos, and the inputs are images\n"
            assert not out.exists()
    monkeypatch.setattr(sys, "stdin", _Pipe(src.read_bytes()))
    assert main(["-", "-o", str(tmp_path / "p.png"), "--crf", "20"]) == 2
    assert "fastdeblur: error: --crf: for videos; pipes (-) carry one image" in capsys.readouterr().err


def test_backend_option(tmp_path, capsys):
    """--backend reaches deblur(): the bundled model (no download) through plain PyTorch gives what
    deblur(..., backend="reference") gives; an unknown backend is a usage error."""
    import fastdeblur

    src = _img(tmp_path / "in.png")
    assert main([str(src), "-o", str(tmp_path / "out.png"), "-q", "--model", "fastdeblur-default",
                 "--backend", "reference"]) == 0
    want = fastdeblur.deblur(read_image(src), "fastdeblur-default", backend="reference")
    assert np.array_equal(read_image(tmp_path / "out.png"), want)
    with pytest.raises(SystemExit) as e:
        main([str(src), "-o", str(tmp_path / "x.png"), "--backend", "fastest"])
    assert e.value.code == 2 and "--backend" in capsys.readouterr().err


def test_ensemble_option(tmp_path, capsys):
    """--ensemble N reaches deblur(); other counts are a usage error."""
    import fastdeblur

    src = _img(tmp_path / "in.png")
    assert main([str(src), "-o", str(tmp_path / "out.png"), "-q", "--model", "fastdeblur-default",
                 "--ensemble", "2"]) == 0
    want = fastdeblur.deblur(read_image(src), "fastdeblur-default", ensemble=2)
    assert np.array_equal(read_image(tmp_path / "out.png"), want)
    assert not np.array_equal(want, fastdeblur.deblur(read_image(src), "fastdeblur-default"))
    with pytest.raises(SystemExit) as e:
        main([str(src), "-o", str(tmp_path / "x.png"), "--ensemble", "3"])
    assert e.value.code == 2 and "--ensemble" in capsys.readouterr().err


def test_a_backend_that_cannot_run_is_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # no Triton on a CPU then
    srcs = [_img(tmp_path / f"in{i}.png") for i in range(2)]
    assert main([*map(str, srcs), "-o", str(tmp_path / "out"), "-q", "--model", "fastdeblur-default",
                 "--device", "cpu", "--backend", "triton"]) == 1
    err = capsys.readouterr().err
    assert err.count("backend 'triton' needs a CUDA GPU") == 1 and not (tmp_path / "out").exists()


class _Pipe:
    """A standard stream for main(): bytes through .buffer; isatty as given."""

    def __init__(self, data: bytes = b"", tty: bool = False):
        import io

        self.buffer, self._tty = io.BytesIO(data), tty

    def isatty(self) -> bool:
        return self._tty


def _jpeg_with_exif() -> bytes:
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "a camera"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_pipes_carry_one_image_in_its_own_format(tmp_path):
    """`fastdeblur - -o -`: encoded bytes in on standard input, the same format out on standard
    output (EXIF kept), equal to deblur() of the same bytes; the summary goes to stderr."""
    data = _jpeg_with_exif()
    run = subprocess.run([sys.executable, "-m", "fastdeblur", "-", "-o", "-", "--model", "fastdeblur-default"],
                         input=data, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout == deblur(data, load_model("fastdeblur-default"))
    assert run.stdout.startswith(b"\xff\xd8\xff") and b"a camera" in run.stdout
    assert "1 written" in run.stderr.decode()


def test_standard_input_to_a_file_and_a_file_to_standard_output(tmp_path, monkeypatch, capsys):
    from fastdeblur.io import encode_image

    model = load_model("fastdeblur-default")
    img = np.random.default_rng(1).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    monkeypatch.setattr(sys, "stdin", _Pipe(encode_image(img, ".png")))
    assert main(["-", "-o", str(tmp_path / "out.tif"), "--model", "fastdeblur-default", "-q"]) == 0
    assert np.array_equal(read_image(tmp_path / "out.tif"), deblur(img, model))  # the file's format
    monkeypatch.setattr(sys, "stdin", _Pipe(encode_image(img, ".png")))
    assert main(["-", "-o", str(tmp_path / "out.tif"), "--model", "fastdeblur-default", "-q"]) == 1
    assert "out.tif exists (use --overwrite" in capsys.readouterr().err

    from PIL import Image

    Image.fromarray(img).save(tmp_path / "in.gif")  # not a format the command writes: PNG out
    out = _Pipe()
    monkeypatch.setattr(sys, "stdout", out)
    assert main([str(tmp_path / "in.gif"), "-o", "-", "--model", "fastdeblur-default", "-q"]) == 0
    assert out.buffer.getvalue() == encode_image(deblur(read_image(tmp_path / "in.gif"), model), ".png")


def test_a_closed_pipe_is_one_message(tmp_path, monkeypatch, capsys):
    """The reader went away (`| head -c 10`): one line on stderr, exit 1, and standard output
    pointed at /dev/null so the interpreter's own flush at exit does not fail a second time."""
    class Closed:
        def write(self, data):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    sink = open(tmp_path / "fd", "wb")
    out = _Pipe()
    out.buffer, out.fileno = Closed(), sink.fileno
    monkeypatch.setattr(sys, "stdout", out)
    assert main([str(_img(tmp_path / "a.png")), "-o", "-", "--model", "fastdeblur-default", "-q"]) == 1
    assert "standard output was closed before the image was written" in capsys.readouterr().err
    import os

    assert os.path.samefile(f"/proc/self/fd/{sink.fileno()}", os.devnull)
    sink.close()


def test_pipe_errors_write_nothing(tmp_path, monkeypatch, capsys):
    src = _img(tmp_path / "a.png")
    out = _Pipe()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stdin", _Pipe(b"not an image"))
    assert main(["-", "-o", "-", "--model", "fastdeblur-default", "-q"]) == 1
    assert "standard input: not a readable image" in capsys.readouterr().err and out.buffer.getvalue() == b""
    monkeypatch.setattr(sys, "stdout", _Pipe(tty=True))
    assert main([str(src), "-o", "-"]) == 2
    assert "refusing to write image data to a terminal" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdout", _Pipe())
    monkeypatch.setattr(sys, "stdin", _Pipe(b"never read", tty=True))  # not waited on
    assert main(["-", "-o", "-"]) == 2 and out.buffer.getvalue() == b""
    assert "standard input is a terminal, not an image" in capsys.readouterr().err
    assert sys.stdin.buffer.read() == b"never read"
    assert main(["-", str(src), "-o", str(tmp_path / "o")]) == 2
    assert "- (standard input) must be the only INPUT" in capsys.readouterr().err
    assert main([str(tmp_path), "-o", "-"]) == 2
    assert "writes one image, not a folder or a video" in capsys.readouterr().err
    assert main([str(src), str(src), "-o", "-"]) == 2
    assert "-o - (standard output) takes one INPUT" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Pipe(b"unread"))
    assert main(["-", "-o", str(tmp_path / "o.gif")]) == 2
    assert "unsupported output format '.gif'" in capsys.readouterr().err
    noext = str(tmp_path / "noext")
    for out, says in ((str(tmp_path) + "/", f"the folder {tmp_path}"), (noext, noext)):
        assert main(["-", "-o", out]) == 2  # was "unsupported output format ''"
        assert f"- (standard input) is one image: -o must name an image file such as out.png, got {says}" in \
            capsys.readouterr().err
    assert not (tmp_path / "o.gif").exists()
    monkeypatch.setattr(sys, "stdout", None)  # >&-: Python has no stream (was an AttributeError traceback)
    assert main([str(src), "-o", "-"]) == 2
    assert "standard output is closed: nowhere to write the image" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", None)  # <&-
    assert main(["-", "-o", str(tmp_path / "o.png")]) == 2
    assert "standard input is closed: no image to read" in capsys.readouterr().err


class _Endless:
    """A stream without an end (`cat /dev/zero |`), counting what is read of it."""

    def __init__(self):
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        assert n > 0, "read to the end of an endless stream"
        self.read_bytes += n
        return bytes(n)


def test_an_endless_standard_input_or_a_huge_file_is_named(tmp_path, monkeypatch, capsys):
    """`cat /dev/zero | fastdeblur - -o x.png` read until memory ran out (a MemoryError traceback,
    or the OOM killer): it now stops past what an image within FASTDEBLUR_MAX_PIXELS can take."""
    stream = _Endless()
    pipe = _Pipe()
    pipe.buffer = stream
    monkeypatch.setattr(sys, "stdin", pipe)
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", "1000")  # 8 KB of pixels + 64 MiB
    assert main(["-", "-o", str(tmp_path / "o.png"), "--model", "fastdeblur-default"]) == 1
    assert "standard input: more than 0.1 GiB, larger than any image file within the limit of " \
           "0.0 megapixels; set FASTDEBLUR_MAX_PIXELS" in capsys.readouterr().err
    assert stream.read_bytes < 100 * 2**20 and not (tmp_path / "o.png").exists()
    big = tmp_path / "big.png"  # the same limit for a file, before it is read (sparse: no disk used)
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)
    assert main([str(big), "-o", str(tmp_path / "o.png"), "--model", "fastdeblur-default"]) == 1
    assert f"{big}: 3.0 GiB, larger than any image file within the limit" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_named_as_input_says_how_to_pass_it(tmp_path, capsys):
    """A shell's `<(...)` is a pipe: it can be read once only, so the command names the way that
    works (its bytes on standard input) instead of "not a file"."""
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    assert main([str(fifo), "-o", str(tmp_path / "o.png"), "--model", "fastdeblur-default"]) == 1
    assert f"{fifo}: a pipe, not a file: give its bytes instead (the command reads them from standard input " \
           "with `-`" in capsys.readouterr().err
    with pytest.raises(InputError, match="a pipe, not a file"):
        deblur(fifo)


def test_format_sets_the_outputs_format(tmp_path, monkeypatch, capsys):
    """--format: a folder's outputs in one format (JPEGs out as lossless PNGs, the pixels those of
    deblur()), two inputs that become one name are caught, a name that says otherwise is a usage
    error, -o - is encoded so, and a format this machine cannot write is named before any work."""
    model = load_model("fastdeblur-default")
    folder = tmp_path / "in"
    folder.mkdir()
    jpg = write_image(folder / "a.jpg", np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    _img(folder / "b.tif")
    args = ["--model", "fastdeblur-default", "-q"]
    assert main([str(folder), "-o", str(tmp_path / "out"), "--format", "png", *args]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert np.array_equal(read_image(tmp_path / "out" / "a.png"), deblur(read_image(jpg), model))
    _img(folder / "a.bmp")  # a.bmp and a.jpg both become a.webp
    assert main([str(folder), "-o", str(tmp_path / "webp"), "--format", "webp", *args]) == 1
    assert "a.webp was already written from another input of the same name" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "webp").iterdir()) == ["a.webp", "b.webp"]
    assert main([str(jpg), "-o", str(tmp_path / "x.png"), "--format", "jpeg", *args]) == 2
    assert "--format jpeg contradicts the output name" in capsys.readouterr().err
    assert main([str(jpg), "-o", str(tmp_path / "x.jpeg"), "--format", "jpg", *args]) == 0  # the same format
    for typed in ("JPG", ".jpg", " Jpg"):  # as users type it
        assert main([str(jpg), "-o", str(tmp_path / "x.jpeg"), "--format", typed, "--overwrite", *args]) == 0
    with pytest.raises(SystemExit):
        main([str(jpg), "-o", str(tmp_path / "x.gif"), "--format", "gif", *args])
    assert "invalid choice: 'gif'" in capsys.readouterr().err
    out = _Pipe()
    monkeypatch.setattr(sys, "stdout", out)
    assert main([str(jpg), "-o", "-", "--format", "tif", *args]) == 0
    assert out.buffer.getvalue().startswith(b"II*\x00")
    import fastdeblur.io as fio

    monkeypatch.setattr(fio, "_heif_state", [False])
    assert main([str(folder), "-o", str(tmp_path / "heic"), "--format", "heic", *args]) == 2
    assert "--format heic: .heic files need pillow-heif" in capsys.readouterr().err
    assert not (tmp_path / "heic").exists()


def test_suffix_writes_beside_the_inputs_and_leaves_earlier_outputs_alone(tmp_path, capsys):
    """--suffix _sharp without -o: photo.jpg -> photo_sharp.jpg beside it (subfolders too); a second
    run leaves the *_sharp files alone instead of deblurring them again; with -o DIR the names in
    the folder get the suffix; with -o FILE or a pipe it is a usage error."""
    model = load_model("fastdeblur-default")
    sub = tmp_path / "in" / "sub"
    sub.mkdir(parents=True)
    a = _img(tmp_path / "in" / "a.png")
    b = _img(sub / "b.jpg")
    args = ["--model", "fastdeblur-default", "--suffix", "_sharp"]
    assert main([str(tmp_path / "in"), "-r", "-q", *args]) == 0
    assert sorted(p.relative_to(tmp_path / "in").as_posix() for p in (tmp_path / "in").rglob("*.*")) == [
        "a.png", "a_sharp.png", "sub/b.jpg", "sub/b_sharp.jpg"]
    assert np.array_equal(read_image(tmp_path / "in" / "a_sharp.png"), deblur(read_image(a), model))
    assert main([str(tmp_path / "in"), "-r", "--skip-existing", *args]) == 0
    err = capsys.readouterr().err
    assert "left alone: 2 files already ending in _sharp (earlier outputs)" in err and "0 written, 2 skipped" in err
    assert main([str(a), str(b), "-o", str(tmp_path / "out"), "-q", "--format", "png", *args]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_sharp.png", "b_sharp.png"]
    assert main([str(a), "-o", str(tmp_path / "x.png"), *args]) == 2
    assert "-o " + str(tmp_path / "x.png") + " names the output itself" in capsys.readouterr().err
    assert main(["-", *args]) == 2
    assert "pipes (-) carry one image without a name" in capsys.readouterr().err
    assert main([str(a), "--suffix", "a/b"]) == 2
    assert "--suffix must be some text without a path separator" in capsys.readouterr().err
    assert main([str(a)]) == 2
    assert "-o/--output is required (or --suffix TEXT" in capsys.readouterr().err


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_a_full_disk_stops_a_folder_run(tmp_path, monkeypatch, capsys, code):
    """Until 2026-12-06 every file after the disk filled up was deblurred and then failed to write,
    each with the same error (a 2 s 1080p frame apiece, on and on). The first write that cannot
    happen now stops the run; the writes already in flight finish or fail."""
    import errno

    import fastdeblur.io

    (tmp_path / "in").mkdir()
    for i in range(8):
        _img(tmp_path / "in" / f"p{i}.png")
    attempts = []

    def full(dst, *a, **k):
        attempts.append(dst)
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(fastdeblur.io, "write_image", full)
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out") + "/", "--model", "fastdeblur-default"]) == 1
    err = capsys.readouterr().err
    left = 8 - len(attempts)
    assert 1 <= len(attempts) <= 5 and left >= 3  # at most the writers in flight past the first failure
    assert err.count(os.strerror(getattr(errno, code))) == len(attempts) + 1
    assert f"stopped: the outputs cannot be written ({os.strerror(getattr(errno, code))}): 0 written, 0 skipped, " \
           f"{len(attempts)} failed, {left} left undone" in err


@pytest.mark.parametrize("stderr", ["closed", "full"])
def test_messages_that_cannot_be_written_do_not_fail_the_run(tmp_path, stderr):
    """With stderr closed (`2>&-`: Python's sys.stderr is None) the first progress bar raised an
    AttributeError before any image was read; with stderr on a full disk (`2>/dev/full`) every
    output was written but the exit status was 1. Lost messages no longer decide either."""
    import subprocess
    import sys

    folder = tmp_path / "in"
    for i in range(2):
        _img(folder / f"{i}.png")
    if stderr == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    code = ("import os, sys; from fastdeblur.cli import main; "
            + ("os.close(2); sys.stderr = None; " if stderr == "closed" else "")
            + f"sys.exit(main([{str(folder)!r}, '-o', {str(tmp_path / 'out')!r} + '/', '--model', "
              "'fastdeblur-default']))")
    err = open("/dev/full", "w") if stderr == "full" else subprocess.DEVNULL
    try:
        r = subprocess.run([sys.executable, "-c", code], stderr=err, stdout=subprocess.PIPE, timeout=300)
    finally:
        if stderr == "full":
            err.close()
    assert r.returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png"]
