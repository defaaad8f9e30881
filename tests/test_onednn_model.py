"""The CPU fused model (oneDNN convolutions with fused ReLU / residual adds) equals the reference,
and the heap tuning around CPU forwards does what it claims."""

import copy
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import fastdeblur
from fastdeblur import _heap, api
from fastdeblur.models import onednn_available, onednn_model
from fastdeblur.reference import DMPHN, StackDMPHN

from .utils import rss_bytes

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")

BUILDS = {"dmphn-1-2": lambda: DMPHN((1, 2)), "dmphn-1-2-4": lambda: DMPHN((1, 2, 4)),
          "dmphn-1-2-4-8": lambda: DMPHN((1, 2, 4, 8)), "stack-2": lambda: StackDMPHN(2)}


def _model(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    return BUILDS[name]().eval().requires_grad_(False).to(dtype=dtype, memory_format=torch.channels_last)


@pytest.mark.parametrize("name", list(BUILDS))
@pytest.mark.parametrize("batch,h,w", [(1, 32, 48), (3, 48, 40)])
def test_float32_equals_the_reference(name, batch, h, w):
    model = _model(name)
    x = (torch.rand(batch, 3, h, w) - 0.5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = copy.deepcopy(model).double()(x.double())
        got = onednn_model(model)(x)
        same = model(x)
    # float32 oneDNN against float64: as close as torch's own float32 forward
    assert (got.double() - want).abs().max() <= 2 * (same.double() - want).abs().max() + 1e-5


@pytest.mark.skipif(not onednn_available(torch.bfloat16), reason="oneDNN runs no bfloat16 on this CPU (AVX2 only)")
@pytest.mark.parametrize("name", ["dmphn-1-2-4", "stack-2"])
def test_bfloat16_error_is_at_most_twice_torchs(name):
    model = _model(name)
    x = (torch.rand(2, 3, 32, 40) - 0.5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = copy.deepcopy(model).double()(x.double())
        lowp = model.to(torch.bfloat16)
        got = onednn_model(lowp)(x.bfloat16())
        base = lowp(x.bfloat16())
    err, ref_err = (got.double() - want).abs().max().item(), (base.double() - want).abs().max().item()
    assert err <= 2 * ref_err + 1e-3, f"oneDNN bf16 error {err:.3g} > 2 x torch's {ref_err:.3g}"


def test_inputs_are_not_written_over_and_calls_repeat():
    """The residual adds land in place, but only in the model's own temporaries."""
    model = _model("dmphn-1-2-4")
    fused = onednn_model(model)
    x = (torch.rand(1, 3, 32, 32) - 0.5).contiguous(memory_format=torch.channels_last)
    keep = x.clone()
    with torch.inference_mode():
        dec = fused.decoder_lv1
        feat = torch.rand(1, 128, 8, 8).contiguous(memory_format=torch.channels_last)
        feat_copy = feat.clone()
        torch.testing.assert_close(dec(feat), model.decoder_lv1(feat), rtol=1e-5, atol=1e-5)
        assert torch.equal(feat, feat_copy)
        a, b = fused(x), fused(x)
    assert torch.equal(x, keep) and torch.equal(a, b)


def test_tiled_equals_whole():
    model = onednn_model(_model("dmphn-1-2-4"))
    x = (torch.rand(1, 3, 160, 144) - 0.5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, tile=128), model(x), rtol=1e-5, atol=1e-5)


def test_rejects_a_gpu_model():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    with pytest.raises(ValueError, match="runs on the CPU"):
        onednn_model(DMPHN((1, 2)).cuda())


def test_deblur_on_cpu_uses_it_by_default(monkeypatch):
    fused, _ = api._resolve_backend(None, torch.device("cpu"), torch.float32)
    assert fused == "onednn"
    assert api._resolve_backend("reference", torch.device("cpu"), torch.float32)[0] is None
    monkeypatch.setenv("FASTDEBLUR_BACKEND", "reference")
    assert api._resolve_backend(None, torch.device("cpu"), torch.bfloat16)[0] is None
    model = _model("dmphn-1-2-4")
    img = np.random.rand(40, 56, 3).astype(np.float32)
    monkeypatch.delenv("FASTDEBLUR_BACKEND")
    np.testing.assert_allclose(fastdeblur.deblur(img, model), fastdeblur.deblur(img, model, backend="reference"),
                               atol=1e-6)


def _mmapped_bytes() -> int:
    """Bytes glibc holds in blocks it mapped one by one (mmap) rather than on its heap."""
    lib = _heap._glibc()
    lib.mallinfo2.restype = _heap._Mallinfo2
    return lib.mallinfo2().hblkhd


@pytest.mark.skipif(_heap._glibc() is None or not hasattr(_heap._glibc(), "mallinfo2"),
                    reason="heap tuning is glibc-only (mallinfo2: glibc >= 2.33)")
def test_large_blocks_come_from_the_heap_inside_and_pages_are_released_after(monkeypatch):
    size = 64 << 20  # above glibc's largest mmap threshold (32 MiB)
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 0.0)  # trim as the `with` ends
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "0")
    calls = []

    class Spy:  # off: glibc is not touched (whether a block is then mapped is glibc's business:
        def __getattr__(self, name):  # a free chunk left on the heap by earlier tests serves it)
            calls.append(name)
            return getattr(real, name)

    real = _heap._glibc()
    monkeypatch.setattr(_heap, "_libc", Spy())
    with _heap.reuse_heap():
        torch.empty(size, dtype=torch.uint8).fill_(1)
    assert calls == [] and _heap._depth == 0
    monkeypatch.setattr(_heap, "_libc", real)
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "1")
    with _heap.reuse_heap():
        with _heap.reuse_heap():  # nests
            base = _mmapped_bytes()
            block = torch.empty(size, dtype=torch.uint8).fill_(1)
            assert _mmapped_bytes() - base < size  # on the heap, where a freed block's pages stay
            del block
            torch.empty(4 * size, dtype=torch.uint8).fill_(1)  # freed at once, its pages kept
            held = rss_bytes()
        assert _heap._depth == 1
    assert _heap._depth == 0
    assert held - rss_bytes() >= 3 * size, "leaving the outermost reuse_heap() returns the free pages"


@pytest.mark.skipif(_heap._glibc() is None, reason="heap tuning is glibc-only")
def test_the_trim_waits_for_a_pause_between_forwards(monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "1")
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 0.3)
    with _heap.reuse_heap():
        torch.empty(256 << 20, dtype=torch.uint8).fill_(1)
        held = rss_bytes()
    first = _heap._trim_timer
    assert first is not None and first.daemon
    with _heap.reuse_heap():  # the next forward starts before the trim: it is called off
        assert first.finished.is_set() and _heap._trim_timer is None  # cancelled
    assert _heap._trim_timer is not None
    _heap._trim_timer.join(5)
    assert held - rss_bytes() >= 150 << 20, "after the pause the free pages went back"


@pytest.mark.skipif(_heap._glibc() is None or not hasattr(_heap._glibc(), "mallinfo2"),
                    reason="mallinfo2: glibc >= 2.33")
def test_kept_heap_pages_count_as_available_until_the_trim(monkeypatch):
    """Back-to-back frames: the pages the last forward kept are the process's to reuse, but the
    kernel calls them used; without counting them, a frame that fitted whole would be tiled
    because the one before it kept its pages (in a container near the limit, every other frame)."""
    from fastdeblur import api

    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "1")
    monkeypatch.delenv("FASTDEBLUR_MEMORY_BUDGET", raising=False)
    monkeypatch.setattr(_heap, "TRIM_DELAY_S", 60.0)  # the pause before the trim has not come yet
    monkeypatch.setattr(api._system, "memory_available", lambda: 1 << 30)
    with _heap.reuse_heap():
        torch.empty(256 << 20, dtype=torch.uint8).fill_(1)
    kept = _heap.free_bytes()
    assert kept >= 256 << 20
    # (small Python objects come and go on the same heap between the two readings)
    assert abs(api.memory_budget(torch.device("cpu")) - ((1 << 30) + kept) // 2) < 1 << 20
    _heap._trim_timer.cancel()
    _heap._release()  # trimmed: the pages went back, and mallinfo2's free chunks no longer count
    assert _heap.free_bytes() == 0
    assert api.memory_budget(torch.device("cpu")) == (1 << 30) // 2


def test_heap_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_MALLOC_TUNING", "0")
    assert not _heap.enabled()
    with _heap.reuse_heap():
        assert _heap._depth == 0


def test_deblur_reuses_memory_and_glibcs_heap_for_whole_images_only(monkeypatch):
    import contextlib

    calls = []

    @contextlib.contextmanager
    def spy(limit=None, tiled=False):
        calls.append((limit, tiled))
        yield

    monkeypatch.setattr(_heap, "reuse_heap", spy)
    monkeypatch.setenv("FASTDEBLUR_MEMORY_BUDGET", "600")
    model = _model("dmphn-1-2")
    img = np.random.rand(160, 144, 3).astype(np.float32)
    fastdeblur.deblur(img, model, tile=0)
    fastdeblur.deblur(img, model, tile=128)  # tiled: the block cache only, glibc's defaults
    # whole, the cache may hold the budget (the forward fits it); tiled, half of it
    assert calls == [(600 << 20, False), (300 << 20, True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_images_run_whole_by_the_models_own_memory_figure(monkeypatch, dtype):
    """The oneDNN twin's whole-image forward needs ~3x less memory per pixel than the reference
    forward's estimate (WHOLE_BYTES_PER_PX, measured): deblur() tiles only what exceeds the
    budget by its figure, so a 4032x3024 photo runs whole in bfloat16 under 3 GiB."""
    import contextlib

    from fastdeblur.models.onednn import WHOLE_BYTES_PER_PX, whole_bytes_per_px

    if not onednn_available(dtype):
        pytest.skip(f"oneDNN runs no {dtype} here")
    per_px = whole_bytes_per_px(dtype)
    assert onednn_model(_model("dmphn-1-2", dtype)).whole_bytes_per_px == per_px
    # each path has its own figure: on oneDNN alone, bfloat16 needs more (measured on an AMX Xeon)
    assert onednn_model(_model("dmphn-1-2", dtype), use_winograd=False).whole_bytes_per_px == \
        WHOLE_BYTES_PER_PX[dtype, False] > WHOLE_BYTES_PER_PX[dtype, True]
    on_winograd = WHOLE_BYTES_PER_PX[torch.bfloat16, True]
    assert api.auto_tile(4032 * 3024, torch.bfloat16, 3 << 30, on_winograd) is None
    assert api.auto_tile(4032 * 3024, torch.bfloat16, 3 << 30) is not None  # by the reference's estimate
    assert api.auto_tile(6000 * 4000, torch.bfloat16, 3 << 30, on_winograd) is not None
    calls = []

    @contextlib.contextmanager
    def spy(limit=None, tiled=False):
        calls.append(tiled)
        yield

    monkeypatch.setattr(_heap, "reuse_heap", spy)
    h, w = 160, 144
    img = np.random.rand(h, w, 3).astype(np.float32)
    model = _model("dmphn-1-2", dtype)
    for budget, tiled in ((1.05 * h * w * per_px, False), (0.95 * h * w * per_px, True)):
        monkeypatch.setenv("FASTDEBLUR_MEMORY_BUDGET", str(budget / 2**20))
        calls.clear()
        fastdeblur.deblur(img, model, device="cpu")
        assert calls == [tiled]


def test_a_failing_self_check_falls_back_to_the_reference(monkeypatch):
    from fastdeblur.models import onednn

    def broken(self, h, reuse=False):
        raise RuntimeError("mkldnn_convolution_pointwise: schema changed")

    monkeypatch.setattr(onednn._OneDNN, "forward", broken)
    assert onednn.onednn_available.__wrapped__() is False  # the uncached check
    monkeypatch.setattr(onednn, "onednn_available", lambda dtype=torch.float32: False)
    assert api._resolve_backend(None, torch.device("cpu"), torch.bfloat16)[0] is None


def test_the_self_check_packs_weights_of_the_dtype_it_checks(monkeypatch):
    from fastdeblur.models import onednn

    seen = []

    class Spy(onednn._OneDNN):
        def __init__(self, layer):
            seen.append(next(layer.parameters()).dtype)
            super().__init__(layer)

    monkeypatch.setattr(onednn, "_OneDNN", Spy)
    for dtype in (torch.float32, torch.bfloat16):  # on AVX2 the bfloat16 packing fails: one entry
        seen.clear()
        onednn.onednn_available.__wrapped__(dtype)
        assert seen and set(seen) == {dtype}


def test_bfloat16_runs_on_any_x86_cpu():
    """oneDNN refuses bfloat16 on AVX2-only CPUs (AMD Zen 3): deblur() must then take the
    reference path, not fail; where the CPU has the instructions the fused path must be on."""
    cpu = torch.device("cpu")
    has = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert onednn_available(torch.bfloat16) is has  # the self-check agrees with torch's CPU probe
    assert api._resolve_backend(None, cpu, torch.bfloat16)[0] == ("onednn" if has else None)
    assert api._resolve_backend(None, cpu, torch.float32)[0] == "onednn"
    if not has:
        with pytest.raises(RuntimeError, match="do not run torch.bfloat16 on this machine"):
            onednn_model(_model("dmphn-1-2", torch.bfloat16))
    img = np.random.default_rng(0).random((64, 96, 3), dtype=np.float32)
    out16 = fastdeblur.deblur(img, _model("dmphn-1-2", torch.bfloat16))
    out32 = fastdeblur.deblur(img, _model("dmphn-1-2"))
    assert out16.dtype == np.float32 and np.abs(out16 - out32).max() < 0.05
    # asking for bfloat16 where it is emulated (17x slower) is allowed, with a warning that says so
    fast = api.cpu_has_fast_bf16()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api._resolve_dtype("bfloat16", cpu)
        api._resolve_dtype(None, cpu)
    assert [str(w.message)[:41] for w in caught] == ([] if fast else ["this CPU has no bfloat16 arithmetic (AMX "])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_starts_with_a_fresh_heap_state():
    import os

    with _heap.reuse_heap():
        pid = os.fork()
        if pid == 0:  # child: the parent's forward is not the child's
            ok = _heap._depth == 0 and _heap._trim_timer is None and not _heap._lock.locked()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


_HUGE_PAGES_CHILD = r"""
import os, sys
import torch, fastdeblur  # torch first, as most scripts do: it allocates nothing on import
x = torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
a, huge, inside = x.data_ptr(), 0, False
with open("/proc/self/smaps") as f:  # the AnonHugePages of the mapping that holds x
    for line in f:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= a < hi
        elif inside and head == "AnonHugePages:":
            huge += int(line.split()[1])
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge)
"""


def _thp_mode() -> str | None:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
@pytest.mark.parametrize("env,want", [({}, None), ({"THP_MEM_ALLOC_ENABLE": "1"}, "1"),
                                      ({"THP_MEM_ALLOC_ENABLE": "0"}, "0")], ids=["default", "user-1", "user-0"])
def test_huge_pages_only_when_the_user_asks(env, want):
    """Importing fastdeblur leaves torch's THP_MEM_ALLOC_ENABLE as it finds it (_heap.py: on a
    fresh VM huge pages made big photos 30% slower); where the user sets it and the kernel's THP
    mode is "madvise" (or "always"), a 64 MiB tensor sits on huge pages, and with the default
    and "madvise" on none."""
    base = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    r = subprocess.run([sys.executable, "-c", _HUGE_PAGES_CHILD], env={**base, **env}, capture_output=True,
                       text=True, timeout=120, check=True)
    got, huge = r.stdout.split()
    assert got == str(want)
    if want == "1" and _thp_mode() in ("madvise", "always"):
        assert int(huge) >= 2048, f"no huge pages under a 64 MiB tensor (THP {_thp_mode()})"
    if want != "1" and _thp_mode() == "madvise":
        assert int(huge) == 0


_WHOLE_IMAGE_PEAK = r"""
import sys
import numpy as np, torch, fastdeblur
from fastdeblur.reference import DMPHN
dtype = getattr(torch, sys.argv[1])
h, w = 720, 1280


def status(key):  # kB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


torch.manual_seed(0)
model = DMPHN((1, 2, 4)).eval().requires_grad_(False).to(dtype=dtype, memory_format=torch.channels_last)
img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
fastdeblur.deblur(img[:64, :64], model, device="cpu")  # builds and packs the twin
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
except OSError:
    sys.exit(print("no-clear-refs"))
base = status("VmRSS")
fastdeblur.deblur(img, model, device="cpu", tile=0)
print((status("VmHWM") - base) * 1024 / (h * w))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("on_winograd", [True, False], ids=["winograd", "onednn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_whole_image_memory_stays_within_the_models_figure(dtype, on_winograd):
    """WHOLE_BYTES_PER_PX decides which images deblur() runs whole: a whole 720p forward's peak
    RSS above the process's baseline must stay under the figure of the path it runs (measured
    194-218 B/px in bfloat16 on Winograd, 272 on oneDNN with AMX, where the figure was
    Winograd's 256 until 2026-12-06; float32 388-400 and 452-477), or large photos could
    outgrow the memory budget."""
    from fastdeblur.models import winograd
    from fastdeblur.models.onednn import whole_bytes_per_px

    if not onednn_available(dtype):
        pytest.skip(f"oneDNN runs no {dtype} here")
    if on_winograd and not winograd.available(dtype):
        pytest.skip(f"the Winograd kernels run no {dtype} here")
    env = {k: v for k, v in os.environ.items() if k != "FASTDEBLUR_MEMORY_BUDGET"}
    env["FASTDEBLUR_WINOGRAD"] = "1" if on_winograd else "0"
    out = subprocess.run([sys.executable, "-c", _WHOLE_IMAGE_PEAK, str(dtype).split(".")[1]], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.strip() == "no-clear-refs":
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    per_px = float(out.stdout.split()[-1])
    limit = whole_bytes_per_px(dtype, on_winograd)
    assert 0 < per_px <= limit, f"{per_px:.0f} B/px above baseline in {dtype}, over {limit}"
