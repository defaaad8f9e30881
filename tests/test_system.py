"""Machine limits (fastdeblur._system) read from fake /proc and /sys trees, and what the library
does with them: the CPU memory budget and the size of torch's CPU thread pool."""

import os

import pytest
import torch

from fastdeblur import _system, api

GiB = 2**30
_MEMINFO = f"MemTotal: {32 * GiB // 1024} kB\nMemFree: {GiB // 1024} kB\nMemAvailable: {20 * GiB // 1024} kB\n"


def _fake_system(root, cgroup: str, groups: dict[str, dict[str, str]], meminfo: str = _MEMINFO):
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text(meminfo)
    (root / "proc/self/cgroup").write_text(cgroup)
    for rel, files in groups.items():
        d = root / "sys/fs/cgroup" / rel
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)
    return root


def test_available_memory_counts_the_page_cache(tmp_path):
    """MemAvailable (free plus droppable cache), not MemFree: a desktop whose memory is mostly file
    cache has plenty to give, and the old SC_AVPHYS_PAGES (MemFree) figure made it tile."""
    assert _system.memory_available(_fake_system(tmp_path, "0::/\n", {})) == 20 * GiB
    assert _system.memory_available(tmp_path / "nothing") is None  # not Linux: the caller falls back


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("where", ["own", "ancestor", "mount"])
def test_available_memory_respects_the_cgroup_limit(tmp_path, version, where):
    """In a container the host's meminfo shows the host; the group's limit less its working set
    (usage without inactive file pages) is what the process can take before the OOM killer."""
    if version == 2:
        files = {"memory.max": f"{4 * GiB}\n", "memory.current": f"{3 * GiB}\n",
                 "memory.stat": f"anon {GiB}\ninactive_file {2 * GiB}\n"}
        unlimited = {"memory.max": "max\n", "memory.current": f"{5 * GiB}\n", "memory.stat": ""}
        cgroup, base = "0::/docker/abc\n", ""
    else:
        files = {"memory.limit_in_bytes": f"{4 * GiB}\n", "memory.usage_in_bytes": f"{3 * GiB}\n",
                 "memory.stat": f"cache {2 * GiB}\ntotal_inactive_file {2 * GiB}\n"}
        unlimited = {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": f"{5 * GiB}\n"}
        cgroup, base = "5:cpu:/\n4:memory:/docker/abc\n", "memory/"
    rel = {"own": "docker/abc", "ancestor": "docker", "mount": ""}[where]
    groups = {base + rel: files} if where == "own" else {base + rel: files, base + "docker/abc": unlimited}
    root = _fake_system(tmp_path, cgroup, groups)
    assert _system.memory_available(root) == 3 * GiB  # 4 GiB limit - (3 GiB used - 2 GiB inactive files)


@pytest.mark.parametrize("version,quota,want", [(2, "max", None), (2, "200000", 2), (2, "250000", 2), (2, "50000", 1),
                                                (1, "-1", None), (1, "200000", 2), (1, "250000", 2), (1, "50000", 1)])
def test_cpu_quota_is_read_and_rounded_down(tmp_path, version, quota, want):
    """Docker's --cpus 2.5 is 250000 of every 100000 us: 2 whole CPUs (one thread more than the
    quota can run gets the whole group throttled); half a CPU is still 1. No quota: "max" in
    cgroup v2, -1 in v1 (whose cpu controller shares its folder with cpuacct)."""
    if version == 2:
        root = _fake_system(tmp_path, "0::/kubepods/pod1\n", {"kubepods/pod1": {"cpu.max": f"{quota} 100000\n"}})
    else:
        files = {"cpu.cfs_quota_us": f"{quota}\n", "cpu.cfs_period_us": "100000\n"}
        root = _fake_system(tmp_path, "3:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/docker/abc": files})
    assert _system.cpu_quota(root) == want
    cpus = len(os.sched_getaffinity(0))
    assert _system.cpu_count(root) == (min(cpus, want) if want else cpus)


def test_no_cgroup_files_mean_no_quota(tmp_path):
    assert _system.cpu_quota(tmp_path) is None
    assert _system.cpu_count(tmp_path) == len(os.sched_getaffinity(0))


@pytest.fixture
def fresh_thread_fit(monkeypatch):
    """fit_threads_to_cpu_quota as on a first call; torch's thread count restored afterwards."""
    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("needs a thread pool of 2 or more to shrink")
    monkeypatch.setattr(api, "_threads_fitted", False)
    monkeypatch.setattr(api, "_THREADS_AT_IMPORT", threads)
    monkeypatch.setattr(api._system, "cpu_quota", lambda: threads - 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    yield threads
    torch.set_num_threads(threads)


def test_threads_shrink_to_the_cpu_quota_once(fresh_thread_fit):
    api.fit_threads_to_cpu_quota()
    assert torch.get_num_threads() == fresh_thread_fit - 1
    torch.set_num_threads(fresh_thread_fit)  # the user's later choice stands
    api.fit_threads_to_cpu_quota()
    assert torch.get_num_threads() == fresh_thread_fit


def test_a_deblur_on_cpu_fits_the_threads(fresh_thread_fit):
    from fastdeblur.reference import DMPHN

    api.run_model(DMPHN((1,)).eval(), torch.rand(1, 3, 16, 16), tile=0)
    assert torch.get_num_threads() == fresh_thread_fit - 1


@pytest.mark.parametrize("choice", ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "set_num_threads"])
def test_threads_the_user_chose_are_left_alone(fresh_thread_fit, monkeypatch, choice):
    if choice == "set_num_threads":
        monkeypatch.setattr(api, "_THREADS_AT_IMPORT", fresh_thread_fit + 1)  # changed since import
    else:
        monkeypatch.setenv(choice, str(fresh_thread_fit))
    api.fit_threads_to_cpu_quota()
    assert torch.get_num_threads() == fresh_thread_fit
