"""What this process may use of the machine: memory and CPUs, as Linux and its cgroups say.

A container's limits are cgroup settings that the usual probes do not show: `os.cpu_count()`
and the affinity mask count the host's cores under a CPU quota, and /proc/meminfo shows the
host's memory under a memory limit. Every reader takes `root` so that tests can point it at a
fake /proc and /sys tree; each returns None where the machine does not say (not Linux, no
cgroup files), and its caller keeps its own default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

_ROOT = Path("/")
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def _read_numbers(path: Path) -> dict[str, int]:
    """'name value' lines (meminfo's 'Name:  value kB', memory.stat's 'name value') -> {name: value}."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    return out


def _cgroup_dirs(root: Path, controller: str) -> Iterator[tuple[int, Path]]:
    """(cgroup version, folder) of the process's group for `controller` and of each group above it,
    whichever exist; in a container the mount point itself is usually the container's group."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "" and line.startswith("0::"):
            version, mount = 2, root / "sys/fs/cgroup"
        elif controller in controllers.split(","):
            version, mount = 1, root / "sys/fs/cgroup" / controllers
            if not mount.is_dir():  # mounted under one of its names only ("cpu", "cpuacct")
                mount = root / "sys/fs/cgroup" / controller
        else:
            continue
        rel = Path(path.strip("/"))
        for d in dict.fromkeys([mount / p for p in [rel, *rel.parents]] + [mount]):
            if d.is_dir():
                yield version, d


def memory_available(root: Path = _ROOT) -> int | None:
    """Bytes this process can still take without swapping.

    The kernel's MemAvailable (free memory plus the page cache it can drop: MemFree alone calls a
    warm file cache used, and made a 720p frame tile on a desktop that had read many files), capped
    by the memory limit of every cgroup above the process (a container's limit; the host's
    meminfo does not show it) less that group's working set (its usage without inactive files).
    """
    found = []
    try:
        meminfo = _read_numbers(root / "proc/meminfo")
        if "MemAvailable" in meminfo:
            found.append(meminfo["MemAvailable"])
    except OSError:
        pass
    for version, d in _cgroup_dirs(root, "memory"):
        limit_file, usage_file, inactive_key = (("memory.max", "memory.current", "inactive_file") if version == 2
                                                else ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                      "total_inactive_file"))
        try:
            limit_text = (d / limit_file).read_text().strip()
            if limit_text == "max" or int(limit_text) >= _UNLIMITED:
                continue
            usage = int((d / usage_file).read_text())
            inactive = _read_numbers(d / "memory.stat").get(inactive_key, 0)
        except (OSError, ValueError):
            continue
        found.append(max(int(limit_text) - max(usage - inactive, 0), 0))
    return min(found) if found else None


def cpu_quota(root: Path = _ROOT) -> int | None:
    """Whole CPUs of time the process's cgroups allow (Docker's --cpus, a Kubernetes CPU limit),
    rounded down and at least 1; None without a quota. A thread pool larger than this runs into
    the scheduler's throttling, where threads that wait on each other stall."""
    quotas = []
    for version, d in _cgroup_dirs(root, "cpu"):
        try:
            if version == 2:
                quota, period = (d / "cpu.max").read_text().split()[:2]
                if quota == "max":
                    continue
            else:
                quota, period = ((d / f).read_text().strip() for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
                if int(quota) < 0:  # -1: no quota
                    continue
            quotas.append(max(1, math.floor(int(quota) / int(period))))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return min(quotas) if quotas else None


def cpu_count(root: Path = _ROOT) -> int:
    """CPUs this process can use: its affinity mask, capped by its cgroups' CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(root)
    return min(cpus, quota) if quota else cpus
