"""The extension's block cache (csrc/cpu/block_cache.cpp) and how reuse_heap() and deblur() use it."""

import os
import random
import threading

import numpy as np
import pytest
import torch

import fastdeblur
from fastdeblur import _ext, _heap
from fastdeblur.reference import DMPHN

from .utils import rss_bytes

pytestmark = pytest.mark.skipif(not _ext.has_ext() or _heap._cache() is None,
                                reason=f"no block cache (extension: {_ext.why_missing()})")
MIB = 1 << 20


def _ops():
    return torch.ops.fastdeblur


def _stats():
    return _heap.cache_stats()


@pytest.fixture
def cache():
    """The cache active with a 256 MiB limit; nothing kept before or after, and no trim pending
    from an earlier deblur() (its timer would empty the cache in the middle of a test)."""
    if _heap._trim_timer is not None:
        _heap._trim_timer.cancel()
        _heap._release()
    _ops().block_cache_end()
    _ops().block_cache_trim()
    _ops().block_cache_begin(256 * MIB)
    yield
    _ops().block_cache_end()
    _ops().block_cache_trim()


def _block(mib: float) -> torch.Tensor:
    return torch.empty(int(mib * MIB), dtype=torch.uint8)


def test_a_freed_block_serves_the_next_request_of_up_to_its_size(cache):
    a = _block(10)
    p = a.data_ptr()
    assert p % (2 * MIB) == 0  # aligned for huge pages
    made = _stats()["made"]
    del a
    assert _stats()["kept"] == 10 * MIB
    b = _block(7)  # rounded up to 8 MiB, and 10 <= 2 * 8: the kept block
    assert b.data_ptr() == p and _stats()["made"] == made and _stats()["kept"] == 0
    b.fill_(3)  # the whole request is usable
    del b
    c = _block(4)  # 10 > 2 * 4: a new block, the kept one stays
    assert c.data_ptr() != p and _stats()["made"] == made + 1 and _stats()["kept"] == 10 * MIB
    d = _block(11)  # larger than anything kept
    assert d.data_ptr() != p and _stats()["made"] == made + 2
    served = _stats()["served"]
    _block(1.5)  # under 2 MiB: the C library's
    assert _stats()["served"] == served


def test_the_profiler_sees_the_blocks(cache):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t = _block(6)
        p = t.data_ptr()
        del t
    usage = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage]  # (made in aten::empty)
    assert 6 * MIB in usage and -6 * MIB in usage, (p, usage)


def test_memory_that_passes_through_is_freed_by_its_own_allocator():
    """raw_allocate() (oneDNN's scratchpads) passes small requests to torch's allocator, and
    raw_deallocate() frees them through the cache's raw_deleter: it must hand them back, or
    every forward leaks (it did: 4 MiB per 96x128 deblur)."""
    torch.manual_seed(0)
    model = DMPHN((1, 2)).eval().requires_grad_(False)
    img = np.random.default_rng(0).random((96, 128, 3), dtype=np.float32)
    for _ in range(10):
        fastdeblur.deblur(img, model, device="cpu")
    before = rss_bytes()
    for _ in range(40):
        fastdeblur.deblur(img, model, device="cpu")
    assert rss_bytes() - before < 40 * MIB


def test_in_use_and_kept_bytes_stay_under_the_limit(cache):
    blocks = [_block(64) for _ in range(3)]
    first = blocks[0].data_ptr()
    del blocks
    assert _stats()["kept"] == 192 * MIB
    big = _block(100)  # needs a new block: the oldest kept one goes, so 100 MiB more fit in 256
    assert _stats()["mapped"] == 228 * MIB and _stats()["kept"] == 128 * MIB
    again = _block(64)
    assert again.data_ptr() != first, "the oldest block was the one unmapped"
    del again
    huge = _block(300)  # in use beyond the limit: allowed, with nothing kept beside it
    assert _stats()["kept"] == 0 and _stats()["mapped"] == 400 * MIB
    del huge  # over the limit: unmapped, not kept
    assert _stats()["kept"] == 0 and _stats()["mapped"] == 100 * MIB
    del big  # back under the limit: kept
    assert _stats()["kept"] == 100 * MIB


def test_blocks_freed_after_a_forward_are_kept_until_the_trim_and_unmapped_after_it(cache):
    kept = _block(128).fill_(1)
    kept_mapped = _stats()["mapped"]
    del kept
    assert _stats()["kept"] == 128 * MIB
    held = _block(32).fill_(1)  # 128 > 2 * 32: a block of its own, in use as the forward ends
    late = _block(8).fill_(1)  # in use until after the trim
    _ops().block_cache_end()
    assert _stats()["served"] > 0
    served = _stats()["served"]
    outside = _block(32)  # inactive: not the cache's
    assert _stats()["served"] == served
    del outside
    mapped = _stats()["mapped"]
    del held  # freed after the forward (as its output is): kept for the next one
    assert _stats()["mapped"] == mapped and _stats()["kept"] == 160 * MIB
    rss = rss_bytes()
    _ops().block_cache_trim()
    assert _stats()["kept"] == 0 and _stats()["mapped"] == kept_mapped - 128 * MIB + 8 * MIB
    assert rss - rss_bytes() >= 120 * MIB, "the kept pages went back to the system"
    del late  # after the trim: unmapped
    assert _stats()["kept"] == 0 and _stats()["mapped"] == kept_mapped - 128 * MIB


def test_threads_allocate_and_free_at_once(cache):
    errors = []

    def work(seed):
        rng = random.Random(seed)
        try:
            live = []
            for _ in range(150):
                if live and rng.random() < 0.5:
                    live.pop(rng.randrange(len(live)))
                else:
                    t = _block(rng.uniform(2, 12)).fill_(seed)
                    live.append(t)
                    assert int(t[-1]) == seed
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert _stats()["mapped"] <= 256 * MIB  # nothing in use: what is kept fits the limit


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12: fork() of a process with threads
def test_a_forked_child_starts_with_the_cache_off_and_nothing_kept(cache):
    _block(16)  # one kept block
    assert _stats()["kept"] == 16 * MIB
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        ok = _stats()["kept"] == 0
        served = _stats()["served"]
        _block(16)
        ok = ok and _stats()["served"] == served
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _stats()["kept"] == 16 * MIB  # the parent's cache is as it was


def test_reuse_heap_begins_the_cache_with_its_limit_and_trims_after_the_pause(monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "1")
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 0.2)
    with _heap.reuse_heap(limit=64 * MIB, tiled=True):
        with _heap.reuse_heap(limit=1):  # nested: the outermost `with` decides
            served = _stats()["served"]
            _block(40)
            assert _stats()["served"] == served + 1 and _stats()["kept"] == 40 * MIB
        assert _heap.free_bytes() >= 40 * MIB  # kept memory counts as available (memory_budget)
    timer = _heap._trim_timer
    assert timer is not None
    timer.join(5)
    assert _stats()["kept"] == 0 and _heap.free_bytes() == 0
    with _heap.reuse_heap():  # no limit: no cache
        served = _stats()["served"]
        _block(40)
        assert _stats()["served"] == served
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "0")
    with _heap.reuse_heap(limit=64 * MIB):  # tuning off: no cache either
        _block(40)
        assert _stats()["served"] == served


def test_turning_the_cache_off_mid_forward_still_ends_and_trims_it(monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_BLOCK_CACHE", "1")
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 0.0)  # trim as the `with` ends
    with _heap.reuse_heap(limit=64 * MIB, tiled=True):
        _block(8)
        assert _stats()["kept"] == 8 * MIB
        monkeypatch.setenv("FASTDEBLUR_BLOCK_CACHE", "0")  # a new forward would not begin it
    assert _stats()["kept"] == 0 and _heap.free_bytes() == 0
    served = _stats()["served"]
    _block(8)  # ended: not the cache's
    assert _stats()["served"] == served


@pytest.mark.parametrize("tile", [0, 256])
def test_deblur_gives_the_same_result_from_reused_memory(monkeypatch, tile):
    """Kept blocks hold the last forward's data, unlike fresh zeroed pages: a kernel that read
    memory it had not written would differ between the runs."""
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 30.0)  # keep the blocks between the calls
    torch.manual_seed(0)
    model = DMPHN((1, 2)).eval().requires_grad_(False)
    img = np.random.default_rng(0).random((320, 384, 3), dtype=np.float32)  # activations >= 2 MiB
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "0")
    fresh = fastdeblur.deblur(img, model, device="cpu", tile=tile)
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "1")
    try:
        served = _stats()["served"]
        first = fastdeblur.deblur(img, model, device="cpu", tile=tile)
        assert _stats()["served"] > served and _heap.free_bytes() > 0
        fastdeblur.deblur(img[::-1].copy(), model, device="cpu", tile=tile)  # other data in the blocks
        again = fastdeblur.deblur(img, model, device="cpu", tile=tile)
    finally:
        if _heap._trim_timer is not None:
            _heap._trim_timer.cancel()
        _heap._release()
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(again, fresh)


def test_back_to_back_forwards_make_no_new_blocks(monkeypatch):
    """The output of a forward outlives it: freed after the cache ends, its block must still be
    kept for the next forward, or every frame of a video maps (and faults in) blocks anew."""
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "1")
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 30.0)  # keep the blocks between the calls
    torch.manual_seed(0)
    model = DMPHN((1, 2)).eval().requires_grad_(False)
    img = np.random.default_rng(0).random((512, 768, 3), dtype=np.float32)  # output: 4.5 MiB
    try:
        for _ in range(2):
            fastdeblur.deblur(img, model, device="cpu", tile=0)
        made = _stats()["made"]
        for _ in range(2):
            fastdeblur.deblur(img, model, device="cpu", tile=0)
        assert _stats()["made"] == made
    finally:
        if _heap._trim_timer is not None:
            _heap._trim_timer.cancel()
        _heap._release()
