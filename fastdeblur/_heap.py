"""Reuse memory across the layers of a CPU forward: the extension's block cache, and glibc's heap.

A CPU forward allocates and frees tens to hundreds of activations of a few sizes (a 720p frame's
32-channel bfloat16 activations are 59 MiB each). By default each is a fresh mapping that the
kernel faults in and zeroes, page by page: measured on 2 cores, 1.0-2.0 s of kernel time and
~0.4-0.8 M page faults per 720p forward, against none when the pages are reused. Two remedies,
both active only inside `reuse_heap()`:

- The block cache (csrc/cpu/block_cache.cpp, when the extension is built): blocks of 2 MiB or
  more are mappings of their own, kept when freed and handed to the next request of up to their
  size (at most twice it). Blocks matched by size do not fragment, so it serves tiled forwards
  too, and it holds at most `limit` bytes (blocks in use and kept): a request that needs a new
  block first unmaps the oldest kept ones. Measured on 2 Zen 5 cores (benchmarks/RESULTS.md,
  memory.py): a first 720p forward 1.7-2.4 -> 1.6-1.7 s with peak RSS 841-1011 -> 508 MiB;
  tiled photos 4032x3024 26.0-26.2 -> 22.3-23.9 s (peak 1.9 -> 2.0 GB), 6000x4000 52.2-52.8 ->
  46.7-47.8 s (2.3-2.4 GB either way).
- glibc (whole-image forwards): large blocks come from its heap and freed ones are kept. It
  covers the blocks under 2 MiB, and everything when the extension is missing. Not for tiled
  forwards: tiles and whole-image tensors of many sizes fragment a heap that keeps its pages
  (measured: 4.8 GB peak RSS for a 6000x4000 photo, against 3.1 GB without).

On leaving the outermost `with`, the cache stops serving requests (blocks freed until the trim,
such as the forward's output, are still kept: unmapped, they were made and faulted in again by
every next forward, ~7,200 page faults per 720p frame) and glibc's mmap threshold goes to its
steady state for large blocks (32 MiB, what its dynamic threshold converges to); TRIM_DELAY_S
later the kept blocks are unmapped, the trim threshold follows (64 MiB) and glibc's free pages go
back to the system (malloc_trim): the process does not keep the forward's peak, while
back-to-back forwards (a folder, a video) keep reusing the memory (trimming after every frame
cost ~85k page faults, ~0.2 s of system time, per 720p frame).

Huge pages: fastdeblur leaves torch's THP_MEM_ALLOC_ENABLE alone (off unless you set it). Set
to 1 before torch's first CPU allocation, it makes torch's allocator (and the block cache)
madvise every block of 2 MiB or more for transparent huge pages, so memory still faulted in
comes 2 MiB at a time. Whether that pays depends on what backs the memory: on 2 Zen 5 cores
(a VM; before the block cache) a tiled 4032x3024 photo took 30.3 s with it against 35.0 s
without, but on 2 Zen 4 cores (a VM whose guest memory had mostly never been touched: a first
2 MiB fault there took ~8 ms, 10x the same bytes in 4 KiB pages, while a reused one took 0.2 ms)
the same photo took 32.4-33.7 s with it against 24.9-25.5 s without (system time 16-18 s against
4 s), 6000x4000 62.4 against 52.5 s, and a first 720p call 3.5-3.9 against 2.3-2.6 s. Off is the
default: that loss is larger than the gain measured on Zen 5, and a fresh VM is where a user
first tries the library. On bare metal or a VM whose memory is warm, huge pages may well win
(compare with benchmarks/memory.py).

FASTDEBLUR_MALLOC_TUNING=0 turns all of this off, FASTDEBLUR_BLOCK_CACHE=0 the block cache only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
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
_active: tuple[bool, bool] = (False, False)  # what the running outermost `with` turned on: (cache, heap)
_tuned: set[str] = set()  # what holds memory until the next trim: "cache", "heap"


def _reset_in_child() -> None:
    """A forked child (DataLoader workers) starts with no forward running and no timer thread,
    with glibc's thresholds, and without a lock a parent's thread held at the fork. (The block
    cache resets itself: inactive, nothing kept.)"""
    global _lock, _depth, _trim_timer, _active, _tuned
    heap = "heap" in _tuned
    _lock, _depth, _trim_timer, _active, _tuned = threading.Lock(), 0, None, (False, False), set()
    lib = _glibc() if heap else None
    if lib is not None:
        lib.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
        lib.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)


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


def _cache_ops():
    """torch.ops.fastdeblur, whose block_cache_* ops drive the block cache, when the extension is
    built (on a Unix); else None."""
    from . import _ext

    if not _ext.load():
        return None
    import torch

    ops = torch.ops.fastdeblur
    return ops if hasattr(ops, "block_cache_begin") else None


def _cache():
    """_cache_ops() unless FASTDEBLUR_BLOCK_CACHE is 0: whether a forward may begin the cache.
    (Ending and trimming one that began use _cache_ops(): the switch may change in between.)"""
    return _cache_ops() if env_flag("FASTDEBLUR_BLOCK_CACHE", True) else None


def enabled() -> bool:
    """reuse_heap() can do something here: tuning is on, and glibc or the block cache is there."""
    return env_flag("FASTDEBLUR_MALLOC_TUNING", True) and (_glibc() is not None or _cache() is not None)


def cache_stats() -> dict[str, int]:
    """The block cache's counters since the process started: bytes kept for reuse, bytes mapped
    (in use and kept), blocks made, requests served; all 0 without the extension."""
    ops = _cache_ops()
    values = ops.block_cache_stats() if ops is not None else [0, 0, 0, 0]
    return dict(zip(("kept", "mapped", "made", "served"), values, strict=True))


@contextlib.contextmanager
def reuse_heap(limit: int | None = None, tiled: bool = False):
    """Reuse the memory of large blocks until the outermost `with` ends (thread-safe, nestable).

    limit: bytes the block cache may hold (blocks in use and kept); None: no block cache.
    tiled: a tiled forward: glibc keeps its defaults and only the block cache reuses.
    The outermost `with` decides both."""
    global _depth, _trim_timer, _active
    if not env_flag("FASTDEBLUR_MALLOC_TUNING", True):
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            if _trim_timer is not None:  # a forward follows soon after the last: keep the memory
                _trim_timer.cancel()
                _trim_timer = None
            ops = _cache() if limit else None
            lib = None if tiled else _glibc()
            if ops is not None:
                ops.block_cache_begin(int(limit))
                _tuned.add("cache")
            if lib is not None:
                lib.mallopt(_M_MMAP_THRESHOLD, _DURING)
                lib.mallopt(_M_TRIM_THRESHOLD, _DURING)
                _tuned.add("heap")
            _active = (ops is not None, lib is not None)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                cache, heap = _active
                _active = (False, False)
                if cache:
                    _cache_ops().block_cache_end()
                if heap:
                    _glibc().mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
                if _tuned and TRIM_DELAY_S > 0:  # the trim threshold stays high until then: no partial trims
                    _trim_timer = threading.Timer(TRIM_DELAY_S, _release)
                    _trim_timer.daemon = True
                    _trim_timer.start()
                elif _tuned:
                    _release_locked()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_bytes() -> int:
    """Bytes kept free for the next forward, until the trim: the block cache's kept blocks, and
    what glibc holds free in the main heap (mallinfo2, glibc >= 2.33). The kernel counts them as
    this process's, so neither MemAvailable nor a cgroup's working set shows them as available,
    yet the next forward reuses them. (After malloc_trim the free chunks' pages are returned but
    still counted by mallinfo2, so then this is 0.)"""
    with _lock:
        tuned = set(_tuned)
    total = 0
    if "cache" in tuned:
        total += cache_stats()["kept"]
    lib = _glibc() if "heap" in tuned else None
    fn = getattr(lib, "mallinfo2", None) if lib is not None else None
    if fn is not None:
        fn.restype = _Mallinfo2
        total += int(fn().fordblks)
    return total


def _release() -> None:
    with _lock:
        if _depth == 0:  # not if a forward started as the timer fired
            _release_locked()


def _release_locked() -> None:
    global _trim_timer
    _trim_timer = None
    if "cache" in _tuned:
        _cache_ops().block_cache_trim()
    if "heap" in _tuned:
        lib = _glibc()
        lib.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)
        lib.malloc_trim(0)
    _tuned.clear()

