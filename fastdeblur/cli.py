"""`fastdeblur` command line: deblur image and video files, and folders of them.

One input file: -o names the output file (or a folder to put it in). Several inputs or a folder:
-o is a folder and names are kept (with --recursive, subfolders too). Videos (with PyAV) are
deblurred frame by frame into a video of the output's kind (fastdeblur.video). Every write is a
temp file plus a rename; a bad file is reported by name and skipped, and the exit status is 1
when any file failed (2 for usage errors).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import sys
import warnings
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from . import __version__, _system
from .errors import ConfigError, InputError, WeightsError, missing_path
from .io import (
    HEIF_HINT,
    HEIF_SUFFIXES,
    PNG_LEVEL,
    VIDEO_SUFFIXES,
    WRITTEN_SUFFIXES,
    cannot_write,
    is_hidden,
    is_image_path,
    suffixes,
)
from .video import VIDEO_HINT, is_video_path, video_available

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # 130: the shell's code for Ctrl-C
EXIT_TERMINATED = 143  # the shell's code for SIGTERM


def _int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer from lo to hi, or lo or more (one line of error, not the list
    of choices)."""
    wanted = f"an integer from {lo} to {hi}" if hi is not None else f"an integer of {lo} or more"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    return parse


def _tile(text: str) -> int:
    """--tile: 0 (never tile) or a size of at least api.MIN_TILE pixels, checked before any file."""
    from .api import MIN_TILE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if value != 0 and value < MIN_TILE:
        raise argparse.ArgumentTypeError(f"0 (never tile) or at least {MIN_TILE} pixels, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastdeblur",
        description="Remove motion blur from photos and videos with DMPHN.",
        epilog="Examples: fastdeblur blurry.png -o sharp.png | fastdeblur photos/ -o sharp/ --half | "
               "fastdeblur clip.mp4 -o sharp.mp4 (videos need PyAV: pip install fastdeblur[video]). "
               "Training: fastdeblur train --help; fastdeblur export CHECKPOINT OUT.safetensors",
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                   help="image or video files, or folders; - reads one image from standard input")
    p.add_argument("-o", "--output", help="output file (one input) or folder (several inputs, a folder, or a "
                   "name ending in /); - writes one image to standard output, in the input's format")
    p.add_argument("--suffix", metavar="TEXT",
                   help="add TEXT to each output's name (photo.jpg -> photo_sharp.jpg with --suffix _sharp); "
                        "without -o the outputs are written beside their inputs, and files in a folder whose "
                        "names already end in TEXT are left alone")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also read the subfolders of folder inputs; the outputs keep the same subfolders")
    p.add_argument("--model", help="model name (see --list-models); default: default, or with a .safetensors "
                                    "--weights file the architecture the file names")
    p.add_argument("--weights", type=Path, help="a .safetensors file (ours, or one from fastdeblur export), a "
                                                "training checkpoint (runs/NAME/last.pt) or a folder with the "
                                                "model's official files, instead of the cache")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--half", dest="precision", action="store_const", const="half",
                      help="16-bit inference: float16 on GPUs, bfloat16 on CPUs (emulated, and slow, on CPUs "
                           "without AMX or AVX512-BF16)")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32",
                      help="float32 inference (exact; the default where there is no fast 16-bit path)")
    p.add_argument("--backend", choices=["reference", "cuda", "triton"], default=None,
                   help="force a path: plain PyTorch, the compiled extension's ops, or the Triton kernels "
                        "(default: the fastest measured for the device; env FASTDEBLUR_BACKEND)")
    p.add_argument("--tile", type=_tile, default=None,
                   help="tile size in pixels; 0 never tiles; default: chosen from the memory available")
    p.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4),
                   help="average the outputs for the image and its mirror image (2), and for both upside "
                        "down (4): sharper, at 2x / 4x the time; default %(default)s (off)")
    p.add_argument("--png-level", type=_int_in(0, 9), default=PNG_LEVEL, metavar="0-9",
                   help="PNG compression, 0 (none) to 9 (smallest, slowest); default %(default)s: a 720p "
                        "frame in ~80 ms, against ~350 ms for level 6 (13%% smaller files)")
    p.add_argument("--quality", type=_int_in(1, 100), default=95, metavar="1-100",
                   help="quality of lossy outputs (JPEG, WebP, AVIF, HEIC); default %(default)s")
    p.add_argument("--format", choices=[s[1:] for s in WRITTEN_SUFFIXES], default=None, metavar="EXT",
                   type=lambda text: text.strip().lstrip(".").lower(),  # JPG and .png as jpg and png
                   help="write images in this format (png, jpg, tif, bmp, webp, avif, heic): the outputs in a "
                        "folder get this suffix, and -o - is encoded so (default: each input's format; PNG for "
                        "GIF, PPM, TGA and the others not written here)")
    p.add_argument("--crf", type=int, default=None, metavar="N",
                   help="video quality: the encoder's constant rate factor, lower is better and bigger "
                        "(default: H.264 18, HEVC 20, VP9 24, AV1 28, about the source's look)")
    p.add_argument("--start", type=float, default=None, metavar="SECONDS",
                   help="videos: begin at this time (e.g. to try a few seconds before a long CPU run)")
    p.add_argument("--end", type=float, default=None, metavar="SECONDS", help="videos: stop at this time")
    exist = p.add_mutually_exclusive_group()
    exist.add_argument("--overwrite", action="store_true", help="replace existing output files")
    exist.add_argument("--skip-existing", action="store_true", help="leave existing output files alone")
    p.add_argument("--strip-metadata", action="store_true",
                   help="write the pixels only (default: keep the input's ICC colour profile, and its EXIF "
                        "block in JPEG, WebP, AVIF, HEIC and PNG outputs, orientation reset since it is applied; "
                        "a video's tags: creation time, location, title)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--list-models", action="store_true", help="list the models and exit")
    p.add_argument("--download", metavar="MODEL", help="fetch a model's weights into the cache and exit")
    p.add_argument("--version", action=_Version, nargs=0,
                   help="show the versions, the compiled extension's state, what a CPU forward runs on and "
                        "the GPUs, and exit")
    return p


class _Version(argparse.Action):
    """--version: fastdeblur's and torch's versions, whether the compiled extension is there
    (without it CPU deblurring runs 2-3x slower), and what a CPU forward runs on: what a bug
    report needs. Worked out only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):
        import torch

        from . import _ext
        from .api import default_dtype
        from .models import amx, winograd

        if _ext.has_ext():
            ext = "installed (CPU ops" + (", CUDA kernels)" if _ext.has_cuda_ext() else ")")
        else:
            ext = f"not installed ({_ext.why_missing()})"
        dtype = default_dtype(torch.device("cpu"))
        convs = ("the extension's Winograd kernels and oneDNN" if winograd.preferred(dtype)
                 else "the extension's AMX kernels and oneDNN" if dtype == torch.bfloat16 and amx.preferred()
                 else "oneDNN")
        isa = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        with _reader_may_leave():
            print(f"fastdeblur {__version__}\ntorch {torch.__version__}\nextension: {ext}\n"
                  f"cpu: {str(dtype).removeprefix('torch.')} by default, convolutions on {convs} ({isa})\n"
                  f"cuda: {f'{gpus} device(s), {torch.cuda.get_device_name(0)}' if gpus else 'not available'}",
                  flush=True)
        parser.exit()


@contextlib.contextmanager
def _reader_may_leave():
    """Text for standard output whose reader may stop early (`fastdeblur --list-models | head -2`):
    the rest goes nowhere, quietly, as for other Unix tools, instead of a BrokenPipeError traceback
    now or at exit."""
    try:
        yield
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    """Standard output's reader left: what is still buffered (and anything written later) goes to
    /dev/null, so flushing it at exit raises no second BrokenPipeError."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


def _list_models() -> int:
    from .weights import cache_dir, get_weights, list_models

    lines = [f"{'name':24} {'cached':7} description"]
    for name in list_models():
        w = get_weights(name)
        folder = cache_dir() / "checkpoints" / w.folder
        cached = "bundled" if w.bundled else "yes" if all((folder / f).is_file() for f in w.files) else "no"
        lines.append(f"{name:24} {cached:7} {w.description}")
    lines.append(f"{'default':24} {'':7} alias of {get_weights('default').name}")
    with _reader_may_leave():
        print("\n".join(lines), flush=True)
    return EXIT_OK


def _download(name: str) -> int:
    from .weights import resolve_files

    files = resolve_files(name, progress=True)
    folder = next(iter(files.values())).parent
    print(f"{name}: {len(files)} files verified in {folder}")
    return EXIT_OK


def _expand(inputs: list[Path], recursive: bool = False, output: Path | None = None, name_suffix: str | None = None
            ) -> tuple[list[tuple[Path, Path]], list[str], Counter[str]]:
    """(file, name relative to its input) pairs, error messages for inputs that don't exist or
    hold no images, and the suffixes of the other files found in the folders (.heic, .txt, ...).
    recursive: folders are walked (hidden folders and the output folder left out), and the
    relative names keep their subfolders. name_suffix (--suffix): files in folders whose names
    already end in it (earlier outputs) are counted under "already ending in ...", not read."""
    files: list[tuple[Path, Path]] = []
    errors: list[str] = []
    ignored: Counter[str] = Counter()
    out = output.resolve() if output is not None else None
    for inp in inputs:
        if inp.is_dir():
            found, others = [], Counter()
            for p in inp.rglob("*") if recursive else inp.iterdir():
                rel = p.relative_to(inp)
                if (not p.is_file() or is_hidden(rel)
                        or (recursive and out is not None and p.resolve().is_relative_to(out))):
                    continue
                if name_suffix and p.stem.endswith(name_suffix):
                    others[f"(already ending in {name_suffix})"] += 1
                elif is_image_path(p) or (is_video_path(p) and video_available()):
                    found.append(rel)
                else:
                    others[p.suffix.lower() or "(no suffix)"] += 1
            if not found:
                hint = ("; its subfolders are read with --recursive"
                        if not recursive and any(p.is_dir() for p in inp.iterdir()) else "")
                seen = f"; it holds {_suffix_list(others)}" if others else ""
                errors.append(f"{inp}: folder holds no images ({', '.join(_readable())}){seen}{hint}")
            else:
                ignored.update(others)
            files.extend((inp / rel, rel) for rel in sorted(found))
        elif inp.exists():
            files.append((inp, Path(inp.name)))
        else:
            errors.append(missing_path(inp, "file or folder"))
    # a file named twice (a.png a.png, or a.png and its folder: overlapping shell globs) runs once
    seen: set[tuple[Path, Path]] = set()
    unique: list[tuple[Path, Path]] = []
    for src, rel in files:
        if (key := (src.resolve(), rel)) not in seen:
            seen.add(key)
            unique.append((src, rel))
    return unique, errors, ignored


def _readable() -> tuple[str, ...]:
    """The suffixes deblurred here: images, and videos where PyAV is installed."""
    return suffixes() + (VIDEO_SUFFIXES if video_available() else ())


def _suffix_list(counts: Counter[str]) -> str:
    """'12 .heic files (pip install pillow-heif ...), 1 .txt file' (the most common first)."""
    def hint(suffix: str) -> str:
        return (f" ({HEIF_HINT})" if suffix in HEIF_SUFFIXES else f" ({VIDEO_HINT})" if suffix in VIDEO_SUFFIXES
                else "")
    def item(suffix: str, n: int) -> str:
        if suffix.startswith("(already"):  # see _expand's name_suffix
            return f"{n} file{'s' * (n != 1)} {suffix[1:-1]}"
        return f"{n} {suffix} file{'s' * (n != 1)}{hint(suffix)}"
    return ", ".join(item(suffix, n) for suffix, n in counts.most_common())


def _same_format(a: str, b: str) -> bool:
    """Two suffixes name the same format (.jpg and .jpeg, .tif and .tiff, .heic and .heif)."""
    def canonical(suffix: str) -> str:
        return {".jpeg": ".jpg", ".tiff": ".tif", ".heif": ".heic"}.get(suffix.lower(), suffix.lower())
    return canonical(a) == canonical(b)


def _format_conflict(args, out: Path) -> str | None:
    """--format against an output file's own name (-o photo.png --format jpg is a contradiction)."""
    if args.format and not _same_format(out.suffix, "." + args.format):
        return f"--format {args.format} contradicts the output name {out}: give one or the other"
    return None


def _plan(args, files: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    def named(src: Path, rel: Path) -> Path:
        """rel with --suffix added to its name and, for images, --format's extension, or .png for an
        input in a format not written here (GIF, PPM, TGA, ...: what Pillow reads beyond suffixes())."""
        ext = rel.suffix
        if not is_video_path(src):
            ext = "." + args.format if args.format else ext if ext.lower() in suffixes() else ".png"
        return rel.with_name(rel.stem + (args.suffix or "") + ext)

    if args.output is None:  # --suffix alone: beside each input
        return [(src, src.parent / named(src, Path(src.name))) for src, _ in files]
    single = len(args.inputs) == 1 and not args.inputs[0].is_dir()
    out = args.output
    if single and not out.is_dir() and not args.output_is_folder:
        src = files[0][0]
        if is_video_path(src) != is_video_path(out):
            raise InputError(f"output {out} must be a video file ({', '.join(VIDEO_SUFFIXES)}) for the video {src}"
                             if is_video_path(src) else f"output {out} is a video, but the input {src} is an image")
        if not is_video_path(out) and out.suffix.lower() not in suffixes():
            what = f"unsupported output format {out.suffix!r}" if out.suffix else "no file suffix to tell the format"
            raise InputError(f"output {out}: {what} (use one of {', '.join(suffixes())})")
        if is_video_path(out) and args.format:
            raise InputError(f"--format names an image format; the video {out} is written as its name says")
        if (conflict := _format_conflict(args, out)) is not None:
            raise InputError(conflict)
        if args.suffix:
            raise InputError(f"--suffix names outputs in a folder or beside their inputs; -o {out} names the "
                             "output itself: give one or the other")
        return [(src, out)]
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} must be a folder when the input is a folder or several files")
    if not out.exists() and out.suffix.lower() in suffixes() + VIDEO_SUFFIXES:  # a typo'd name, not a folder
        raise InputError(f"output {out} looks like a file name, but a folder or several files need -o "
                         "to name a folder")
    jobs = [(src, out / named(src, rel)) for src, rel in files]
    if len(jobs) > 1 and all(_same_file(src, dst) for src, dst in jobs):  # -o names the input folder
        raise InputError(f"every output in {out} would replace its input: add --suffix TEXT (e.g. --suffix _sharp) "
                         "or name another folder")
    return jobs


def _video_only(args) -> list[str]:
    """The options given that only videos use."""
    return [f"--{k}" for k in ("start", "end", "crf") if getattr(args, k) is not None]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `fastdeblur train ...` and `fastdeblur export CHECKPOINT OUT` are fastdeblur-train's
    # (a file named "train" or "export" is deblurred as ./train)
    if argv and argv[0] in ("train", "export"):
        from .train.cli import main as train_main

        return train_main(argv[1:] if argv[0] == "train" else ["--export", *argv[1:]])
    with _sigterm_as_interrupt() as terminated, messages_cannot_fail():
        code = _main(argv)
    return EXIT_TERMINATED if code == EXIT_INTERRUPTED and terminated else code


class _QuietStream:
    """Standard error for the commands' messages and progress bars, whose writes cannot fail the
    run: with stderr closed (`2>&-`, some daemons and service managers: Python's sys.stderr is
    then None) the first progress bar raised AttributeError before any image was read, and with
    stderr on a full disk (`2>/dev/full`) a folder's outputs were all written but the exit status
    was 1. Messages that cannot be written are lost; the work and the exit status are not."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (AttributeError, OSError, ValueError):  # None, a closed descriptor, a full disk
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (AttributeError, OSError, ValueError):
            return False

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def messages_cannot_fail():
    """sys.stderr as a _QuietStream while a command runs (fastdeblur, fastdeblur-train)."""
    real = sys.stderr
    sys.stderr = _QuietStream(real)
    try:
        yield
    finally:
        sys.stderr = real


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (`kill`, `docker stop`, a job scheduler's stop) ends the command as Ctrl-C does:
    nothing new starts, the writes in flight finish, a video's temp file is removed and the
    summary says what is left undone; exit status 143. Until 2026-12-06 it killed the process
    where it stood, leaving a video's `.NAME.XXXX.mp4.part` file behind. Only on the main thread,
    which alone receives signals."""
    import signal
    import threading

    terminated: list[int] = []  # the signal, once it has come
    if threading.current_thread() is not threading.main_thread():
        yield terminated
        return

    def interrupt(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, before)


def _main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.list_models:
            return _list_models()
        if args.download:
            return _download(args.download)
    except (InputError, WeightsError) as e:
        print(f"fastdeblur: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if not args.inputs:
        parser.print_usage(sys.stderr)
        print("fastdeblur: error: give at least one INPUT (or --list-models)", file=sys.stderr)
        return EXIT_USAGE
    if args.suffix is not None and (not args.suffix or any(c in args.suffix for c in "/\\" + os.sep)):
        parser.print_usage(sys.stderr)
        print("fastdeblur: error: --suffix must be some text without a path separator", file=sys.stderr)
        return EXIT_USAGE
    if args.output is None and not args.suffix:
        parser.print_usage(sys.stderr)
        print("fastdeblur: error: -o/--output is required (or --suffix TEXT, to write beside each input)",
              file=sys.stderr)
        return EXIT_USAGE
    # "-o out/" names a folder, whether or not it exists yet; Path() drops the slash
    args.output_is_folder = args.output is not None and args.output.endswith(("/", os.sep))
    args.output = Path(args.output) if args.output is not None else None
    if args.tile is not None and args.tile < 0:
        print("fastdeblur: error: --tile must be 0 or a positive number of pixels", file=sys.stderr)
        return EXIT_USAGE
    if args.crf is not None and args.crf < 0:
        print("fastdeblur: error: --crf must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    if (args.start is not None and not 0 <= args.start < math.inf) or (
            args.end is not None and not (args.start or 0) < args.end < math.inf):
        print("fastdeblur: error: --start must be 0 or more and --end after it (seconds)", file=sys.stderr)
        return EXIT_USAGE
    if args.format and (why := cannot_write("." + args.format)) is not None:
        print(f"fastdeblur: error: --format {args.format}: {why}", file=sys.stderr)
        return EXIT_USAGE
    from_stdin = any(str(p) == "-" for p in args.inputs)
    if from_stdin or str(args.output) == "-":  # pipes: one image as encoded bytes (a file named - is ./-)
        problem = None
        if args.suffix:
            problem = "--suffix names files; pipes (-) carry one image without a name"
        elif len(args.inputs) > 1:
            problem = ("- (standard input) must be the only INPUT" if from_stdin
                       else "-o - (standard output) takes one INPUT")
        elif not from_stdin and (args.inputs[0].is_dir() or is_video_path(args.inputs[0])):
            problem = "-o - (standard output) writes one image, not a folder or a video"
        elif from_stdin and is_video_path(args.output):
            problem = "videos are read from files, not standard input"
        elif str(args.output) != "-" and ((folder := args.output_is_folder or args.output.is_dir())
                                          or not args.output.suffix):
            what = ("the folder " if folder else "") + str(args.output)
            problem = f"- (standard input) is one image: -o must name an image file such as out.png, got {what}"
        elif str(args.output) != "-" and args.output.suffix.lower() not in WRITTEN_SUFFIXES:
            problem = f"unsupported output format {args.output.suffix!r} (use one of {', '.join(suffixes())})"
        elif str(args.output) != "-":
            problem = _format_conflict(args, args.output)
        if not problem and (video_only := _video_only(args)):
            problem = f"{', '.join(video_only)}: for videos; pipes (-) carry one image"
        if problem:
            parser.print_usage(sys.stderr)
            print(f"fastdeblur: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
        return _stream(args)

    files, errors, ignored = _expand(args.inputs, args.recursive, args.output, args.suffix)
    for msg in errors:
        print(f"fastdeblur: error: {msg}", file=sys.stderr)
    earlier = Counter({k: ignored.pop(k) for k in list(ignored) if k.startswith("(already")})
    if earlier and not args.quiet:
        print(f"fastdeblur: left alone: {_suffix_list(earlier)} (earlier outputs)", file=sys.stderr)
    if ignored and not args.quiet:  # say so: a folder of HEIC photos would otherwise pass in silence
        print(f"fastdeblur: not images fastdeblur reads, left alone: {_suffix_list(ignored)}", file=sys.stderr)
    if not files:
        return EXIT_FAILED
    try:
        jobs = _plan(args, files)
        if (video_only := _video_only(args)) and not any(is_video_path(src) for src, _ in jobs):  # else ignored
            raise InputError(f"{', '.join(video_only)}: for videos, and the inputs are images")
    except InputError as e:
        print(f"fastdeblur: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _run(args, jobs, failed=len(errors))


def _load_model(args):
    """The model the options ask for; its warnings (e.g. --half where bf16 is emulated) are
    printed once each, as one line. Raises InputError or WeightsError."""
    import torch

    from .api import (
        _resolve_backend,
        _resolve_device,
        _resolve_dtype,
        for_inference,
        load_model,
        warn_if_extension_missing,
    )

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            device = _resolve_device(args.device)
            dtype = None  # the device's default (see deblur)
            if args.precision == "half":
                dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
            elif args.precision == "fp32":
                dtype = torch.float32
            resolved = _resolve_dtype(dtype, device)
            if _resolve_backend(args.backend, device, resolved)[0] == "onednn":  # once, not per file
                warn_if_extension_missing(resolved)
            return for_inference(load_model(args.model, args.weights, device, dtype=dtype))
    finally:
        for msg in dict.fromkeys(str(w.message) for w in caught):
            print(f"fastdeblur: warning: {msg}", file=sys.stderr)


def _deblur_with_bar(img, model, args, name: str):
    """deblur() with the command's options; on a CPU, where a photo takes seconds to minutes, a
    second progress bar follows it."""
    from tqdm import tqdm

    from .api import _first_tensor, deblur

    per_image = not args.quiet and _first_tensor(model).device.type == "cpu"
    with tqdm(total=100, desc=name, leave=False, position=1, file=sys.stderr,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
              disable=None if per_image else True) as bar:
        return deblur(img, model, tile=args.tile, backend=args.backend, ensemble=args.ensemble,
                      progress=(lambda f: bar.update(round(100 * f) - bar.n)) if per_image else None)


def _stream(args) -> int:
    """`-` as the input (standard input) or the output (standard output): one image, as encoded
    bytes, for pipes (`curl ... | fastdeblur - -o - > sharp.jpg`). The output to a pipe is in
    --format, else the input's format (PNG where fastdeblur does not write that one); to a file,
    in the file's."""
    from .io import encode_image, output_format, read_image, read_metadata, read_stream, write_image

    src, dst = args.inputs[0], args.output
    from_stdin, to_stdout = str(src) == "-", str(dst) == "-"
    for used, stream, problem in ((to_stdout, sys.stdout, "standard output is closed: nowhere to write the image"),
                                  (from_stdin, sys.stdin, "standard input is closed: no image to read")):
        if used and stream is None:  # the shell's >&- or <&-: Python has no stream there (was an AttributeError)
            print(f"fastdeblur: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if to_stdout and sys.stdout.isatty():
        print("fastdeblur: error: refusing to write image data to a terminal: redirect standard output "
              "(> sharp.png) or give -o FILE", file=sys.stderr)
        return EXIT_USAGE
    if from_stdin and sys.stdin.isatty():  # read() would wait for an image typed at the keyboard
        print("fastdeblur: error: standard input is a terminal, not an image: pipe one in "
              "(fastdeblur - -o sharp.png < photo.jpg) or name the file", file=sys.stderr)
        return EXIT_USAGE
    if not to_stdout and dst.exists() and not (args.overwrite or args.skip_existing):
        print(f"fastdeblur: error: output {dst} exists (use --overwrite or --skip-existing)", file=sys.stderr)
        return EXIT_FAILED
    if not to_stdout and dst.exists() and args.skip_existing:
        if not args.quiet:
            print("fastdeblur: 0 written, 1 skipped, 0 failed", file=sys.stderr)
        return EXIT_OK
    if not to_stdout and (why := cannot_write(dst.suffix)) is not None:  # said before the network runs
        print(f"fastdeblur: error: {dst}: {why}", file=sys.stderr)
        return EXIT_FAILED
    name = "standard input" if from_stdin else str(src)
    try:
        if from_stdin:
            data = read_stream(sys.stdin.buffer, "standard input")
            img, meta_src, head = read_image(data), data, data
        else:
            img, meta_src = read_image(src), src
            with open(src, "rb") as f:
                head = f.read(64)  # enough to tell the format
        meta = {} if args.strip_metadata else read_metadata(meta_src)
        model = _load_model(args)
        sharp = _deblur_with_bar(img, model, args, "stdin" if from_stdin else src.name)
        if to_stdout:
            out = encode_image(sharp, "." + args.format if args.format else output_format(head),
                               quality=args.quality, png_level=args.png_level, metadata=meta)
            sys.stdout.buffer.write(out)  # encoded whole first: an error above writes nothing
            sys.stdout.buffer.flush()
        else:
            write_image(dst, sharp, quality=args.quality, png_level=args.png_level, metadata=meta)
    except BrokenPipeError:  # the reader went away (`| head -c 10`): say so, and no second error at exit
        _stdout_to_devnull()
        print("fastdeblur: error: standard output was closed before the image was written", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, RuntimeError, OSError) as e:  # InputError, WeightsError, OOM, I/O
        msg = str(e).replace("image data", name, 1) if from_stdin else _reason(src, e)
        print(f"fastdeblur: error: {msg}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("fastdeblur: interrupted: nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print("fastdeblur: 1 written, 0 skipped, 0 failed", file=sys.stderr)
    return EXIT_OK


def _run(args, jobs: list[tuple[Path, Path]], failed: int) -> int:
    """_run_jobs, with Pillow's warnings about damaged files ("Tag data larger than file. Skipping
    tag 257", "Corrupt EXIF data") left out: each file gets one line here, the error it fails with
    or nothing, and those warnings printed two raw lines each beside it."""
    with warnings.catch_warnings():  # entered and left on this thread; the readers see its filter
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
        return _run_jobs(args, jobs, failed)


def _run_jobs(args, jobs: list[tuple[Path, Path]], failed: int) -> int:
    from tqdm import tqdm

    from .io import read_image, read_metadata, write_image

    try:
        model = _load_model(args)
    except (InputError, WeightsError) as e:
        print(f"fastdeblur: error: {e}", file=sys.stderr)
        return EXIT_FAILED

    inputs = {src.resolve() for src, _ in jobs}
    written: set[Path] = set()  # outputs written or being written
    done = skipped = 0
    interrupted, failed_before = False, failed
    config_error: ConfigError | None = None  # a FASTDEBLUR_* setting no file can run with: stop at once
    full: OSError | None = None  # the outputs' disk is full or read-only: no later file can be written either

    def load(src: Path) -> tuple:
        """The pixels and the metadata the output keeps (on a reader thread)."""
        return read_image(src), ({} if args.strip_metadata else read_metadata(src))

    def verdict(src: Path, dst: Path) -> str | None:
        """None to deblur src into dst, "skip", or why not."""
        if dst.resolve() in inputs or _same_file(src, dst):
            return f"refusing to overwrite the input file {dst}"
        if dst.resolve() in written:
            return f"output {dst} was already written from another input of the same name"
        if dst.exists() and args.skip_existing:
            return "skip"
        if dst.exists() and not args.overwrite:
            return f"output {dst} exists (use --overwrite or --skip-existing)"
        why = ((None if video_available() else f"videos need PyAV: {VIDEO_HINT}") if is_video_path(dst)
               else cannot_write(dst.suffix))
        if why is not None:  # say so before the network runs
            return f"{dst}: {why}"
        return None

    def deblur_one_video(src: Path, dst: Path) -> None:
        """A video, frame by frame, with a bar of its frames (videos are not read ahead)."""
        from .video import deblur_video

        with tqdm(desc=src.name, unit="frame", leave=False, position=1, file=sys.stderr,
                  disable=True if args.quiet else None) as bar:
            def frames_done(n: int, total: int | None) -> None:
                if total != bar.total:
                    bar.total = total
                    bar.refresh()
                bar.update(n - bar.n)

            with warnings.catch_warnings(record=True) as caught:  # a file cut short: said, not fatal
                warnings.simplefilter("always", RuntimeWarning)
                result = deblur_video(src, dst, model, overwrite=True, crf=args.crf, start=args.start, end=args.end,
                                      metadata=not args.strip_metadata, progress=frames_done, tile=args.tile,
                                      backend=args.backend, ensemble=args.ensemble)
        for w in caught:
            tqdm.write(f"fastdeblur: warning: {w.message}", file=sys.stderr)
        if "re-encoded" in result.audio and not args.quiet:
            tqdm.write(f"fastdeblur: {dst}: sound {result.audio} ({dst.suffix} files cannot hold the source's)",
                       file=sys.stderr)

    # Files are decoded on reader threads ahead of the network and encoded on writer threads behind
    # it (the codecs release the GIL): a 720p PNG takes ~37 ms to read and ~85 ms to write here,
    # against a GPU forward of ~9 ms. At most `writers` writes and `lookahead` reads are in flight,
    # so memory holds a few images beyond the current one.
    readers, writers = _io_threads()
    lookahead = readers + 1
    with ThreadPoolExecutor(readers, thread_name_prefix="fastdeblur-read") as reader, \
            ThreadPoolExecutor(writers, thread_name_prefix="fastdeblur-write") as writer:
        reads: dict[int, Future] = {}
        pending: deque[tuple[Future, Path, Path]] = deque()

        def finish_oldest() -> None:
            nonlocal done, failed, full
            fut, src, dst = pending.popleft()
            try:
                fut.result()
                done += 1
            except Exception as e:  # a bug fails this file only: see _EXPECTED
                written.discard(dst.resolve())
                print(f"fastdeblur: error: {_reason(src, e)}", file=sys.stderr)
                failed += 1
                full = full or _disk_full(e)

        try:
            for i, (src, dst) in enumerate(tqdm(jobs, desc="deblurring", unit="file",
                                                disable=True if args.quiet else None, file=sys.stderr)):
                if full is not None:  # each file after would be deblurred only to fail the same way
                    break
                for j in range(i, min(i + lookahead, len(jobs))):  # read ahead what will be deblurred
                    if j not in reads and not is_video_path(jobs[j][0]) and verdict(*jobs[j]) is None:
                        reads[j] = reader.submit(load, jobs[j][0])
                read = reads.pop(i, None)
                reason = verdict(src, dst)
                if reason == "skip":
                    skipped += 1
                    continue
                if reason is None and is_video_path(src):
                    written.add(dst.resolve())
                    try:
                        deblur_one_video(src, dst)
                        done += 1
                        continue
                    except ConfigError as e:
                        written.discard(dst.resolve())
                        config_error = e
                        break
                    except Exception as e:  # a bug fails this file only: see _EXPECTED
                        written.discard(dst.resolve())
                        reason = _reason(src, e)
                        full = full or _disk_full(e)
                elif reason is None:
                    try:
                        img, meta = (read or reader.submit(load, src)).result()
                        sharp = _deblur_with_bar(img, model, args, src.name)
                    except ConfigError as e:
                        config_error = e
                        break
                    except Exception as e:  # a bug fails this file only: see _EXPECTED
                        reason = _reason(src, e)
                    else:
                        while len(pending) >= writers:
                            finish_oldest()
                        written.add(dst.resolve())
                        pending.append((writer.submit(write_image, dst, sharp, png_level=args.png_level,
                                                      quality=args.quality, metadata=meta), src, dst))
                        continue
                if read is not None:
                    read.cancel()
                print(f"fastdeblur: error: {reason}", file=sys.stderr)
                failed += 1
        except KeyboardInterrupt:  # Ctrl-C: keep what is deblurred, start nothing new
            interrupted = True
        for f in reads.values():
            f.cancel()
        while pending:  # writes in flight finish (each one is atomic)
            finish_oldest()
    left = len(jobs) - done - skipped - (failed - failed_before)
    if config_error is not None:
        print(f"fastdeblur: error: {config_error} (stopped: {done} written, {left} left undone)", file=sys.stderr)
        return EXIT_USAGE
    if full is not None and left:
        print(f"fastdeblur: stopped: the outputs cannot be written ({os.strerror(full.errno)}): {done} written, "
              f"{skipped} skipped, {failed} failed, {left} left undone", file=sys.stderr)
        return EXIT_FAILED
    if interrupted:
        print(f"fastdeblur: interrupted: {done} written, {skipped} skipped, {failed} failed, {left} left undone",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"fastdeblur: {done} written, {skipped} skipped, {failed} failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _io_threads() -> tuple[int, int]:
    """(reader threads, writer threads) for this machine. Writing (PNG encoding) is the slowest
    step; the main thread mostly waits for the network, so writers may use every core. On our
    2 cores, 24 720p frames with a 9 ms stand-in for the network took 1.8 s with (1, 2) against
    2.4-2.6 s with (1, 1)."""
    cpus = _system.cpu_count()  # a container's CPU quota, not the host's cores
    return (1 if cpus < 4 else 2), max(1, min(4, cpus))


# What a file's failure may raise and still be a file's problem: InputError, WeightsError, OOM,
# I/O, codec errors. Anything else is a bug here, said as one, but it fails that file only: a
# batch of a thousand photos does not end at the one that found it.
_EXPECTED = (ValueError, RuntimeError, OSError)


def _disk_full(e: Exception) -> OSError | None:
    """`e` if it says that no output can be written now (a full disk, a quota, a read-only file
    system), which stops a run of many files: each one after would be deblurred, then fail."""
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    return e if full else None


def _reason(src: Path, e: Exception) -> str:
    if not isinstance(e, _EXPECTED):
        return f"{src}: unexpected {type(e).__name__}: {e} (a fastdeblur bug: please report it with this line)"
    return str(e) if str(src) in str(e) else f"{src}: {e}"
