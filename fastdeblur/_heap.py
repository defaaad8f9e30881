"""Keep the C heap's pages across the layers of a CPU forward (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it on free. A 720p frame's activations are 59 MiB each (32 channels, bfloat16), so each
layer's output was a new mapping that the kernel had to fault in and zero, page by page: measured
on 2 cores, 1.0-2.0 s of kernel time and ~0.4-0.8 M page faults per 720p forward, against none
when the pages are reused. Within `reuse_heap()`, large blocks come from the heap and freed ones
are kept. On leaving, the mmap threshold goes to glibc's steady state for large blocks (32 MiB,
what its dynamic threshold converges to), and TRIM_DELAY_S later the trim threshold follows
(64 MiB) and the free pages go back to the system (malloc_trim): the process does not keep the
forward's peak, while back-to-back forwards (a folder, a video) keep reusing the pages (trimming
after every frame cost ~85k page faults, ~0.2 s of system time, per 720p frame).

deblur() uses it for whole-image CPU forwards only: a tiled one (an image too big for the memory
budget) mixes tensors of many sizes, and a heap that keeps its pages fragments (measured: 4.8 GB
peak RSS for a 6000x4000 photo, against 3.1 GB without).

Huge pages: at import, fastdeblur sets THP_MEM_ALLOC_ENABLE=1 unless it is set already, which
makes torch's CPU allocator madvise every block of 2 MiB or more for transparent huge pages (where
the kernel's THP mode is "madvise" or "always"): the pages that are still faulted in (each
tile's activations, whole-image tensors, a first forward) come 2 MiB at a time instead of 4 KiB.
Measured on 2 Zen 5 cores (THP "madvise"; benchmarks/RESULTS.md): a tiled 4032x3024 photo 35.0
-> 30.3 s, 6000x4000 74.1 -> 53.9 s at the same peak RSS; page faults 6.6 M -> 0.1 M and system
time 18.6 -> 4.7 s for the 4032x3024 one.
torch reads the variable once, at its first CPU allocation: import fastdeblur before making
tensors, or set it yourself.

FASTDEBLUR_MALLOC_TUNING=0 leaves malloc alone. Other C libraries: no effect.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

from .errors import env_flag

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DURING = 1 << 30  # no mmap, no trim for blocks under 1 GiB while a forward runs
_AFTER_MMAP, _AFTER_TRIM = 32 << 20, 64 << 20

TRIM_DELAY_S = 1.0  # 0: trim as the outermost `with` ends

_lock = threading.Lock()
_depth = 0
_trim_timer: threading.Timer | None = None
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _reset_in_child() -> None:
    """A forked child (DataLoader workers) starts with no forward running and no timer thread,
    with glibc's thresholds, and without a lock a parent's thread held at the fork."""
    global _lock, _depth, _trim_timer
    raised = _depth > 0 or _trim_timer is not None
    _lock, _depth, _trim_timer = threading.Lock(), 0, None
    lib = _glibc() if raised else None
    if lib is not None:
        lib.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
        lib.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)


def ask_for_huge_pages() -> None:
    """THP_MEM_ALLOC_ENABLE=1 for torch's CPU allocator (module docstring), on Linux, unless set."""
    try:
        tuning = env_flag("FASTDEBLUR_MALLOC_TUNING", True)
    except ValueError:  # a bad value is reported where malloc tuning is used, not at import
        tuning = False
    if tuning and sys.platform.startswith("linux"):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        try:
            lib = ctypes.CDLL(None)
            _libc = lib if hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "malloc_trim") else None
        except (OSError, TypeError):  # TypeError: Windows has no process-wide CDLL(None)
            _libc = None
    return _libc  # type: ignore[return-value]


def enabled() -> bool:
    return env_flag("FASTDEBLUR_MALLOC_TUNING", True) and _glibc() is not None


@contextlib.contextmanager
def reuse_heap():
    """Reuse heap pages for large blocks until the outermost `with` ends (thread-safe, nestable)."""
    global _depth, _trim_timer
    if not enabled():
        yield
        return
    lib = _glibc()
    with _lock:
        _depth += 1
        if _depth == 1:
            if _trim_timer is not None:  # a forward follows soon after the last: keep the pages
                _trim_timer.cancel()
                _trim_timer = None
            lib.mallopt(_M_MMAP_THRESHOLD, _DURING)
            lib.mallopt(_M_TRIM_THRESHOLD, _DURING)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
                if TRIM_DELAY_S > 0:  # the trim threshold stays high until then: no partial trims
                    _trim_timer = threading.Timer(TRIM_DELAY_S, _release)
                    _trim_timer.daemon = True
                    _trim_timer.start()
                else:
                    _release_locked()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_bytes() -> int:
    """Bytes glibc holds free in the main heap while a forward's pages are kept for the next one
    (until the trim; mallinfo2, glibc >= 2.33; else 0). The kernel counts them as this process's,
    so neither MemAvailable nor a cgroup's working set shows them as available, yet the next
    forward reuses them. After malloc_trim the free chunks' pages are returned but still counted
    by mallinfo2, so then this is 0."""
    with _lock:
        kept = _depth > 0 or _trim_timer is not None
    lib = _glibc()
    fn = getattr(lib, "mallinfo2", None) if lib is not None and kept else None
    if fn is None:
        return 0
    fn.restype = _Mallinfo2
    return int(fn().fordblks)


def _release() -> None:
    with _lock:
        if _depth == 0:  # not if a forward started as the timer fired
            _release_locked()


def _release_locked() -> None:
    global _trim_timer
    _trim_timer = None
    lib = _glibc()
    lib.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)
    lib.malloc_trim(0)


ask_for_huge_pages()
