"""How many threads the CPU kernels use by default, and why that number changes at run time.

A decode step is ~200 short parallel regions, each split into one fixed range per thread
(numba's OpenMP layer, a static schedule) and ended by a barrier. When another process
keeps a core busy, the OS deschedules one of our threads for a time slice (several
milliseconds) and every region waits for it: measured on a 2-vCPU EPYC with a busy process
beside SmolLM2, the median matmul went from ~0.1 ms (1 thread) to ~16 ms (2 threads) and
decode from ~10 tok/s to 0.3 tok/s. More threads than free CPUs is the cause, so the
default thread count follows the CPUs that other processes leave free: `CpuShare` reads the
kernel's per-CPU busy time (``/proc/stat``) and subtracts this process's own CPU time,
every `RECHECK_S` while kernels run. An explicit thread count is never changed.
"""

from __future__ import annotations

import math
import os
import threading
import time

# How often the free CPUs are measured while kernels run: often enough that contention
# starting mid-generation costs a fraction of a second, rare enough to cost nothing
# (one read of /proc/stat, ~0.1 ms on a 2-vCPU VM, per interval).
RECHECK_S = 0.2

# A CPU counts as free when other processes used less than this share of it (a busy
# process beside two spinning threads gets ~2/3 of a core; daemons take a few percent).
BUSY_SHARE = 0.25


def affinity_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _quota(path: str, v2: bool) -> int | None:
    """Whole CPUs of one cgroup's quota: v2 ``cpu.max`` ("max 100000" or "150000 100000"),
    v1 ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``."""
    try:
        if v2:
            with open(os.path.join(path, "cpu.max"), encoding="ascii") as f:
                quota, period = f.read().split()[:2]
        else:
            with open(os.path.join(path, "cpu.cfs_quota_us"), encoding="ascii") as f:
                quota = f.read().strip()
            with open(os.path.join(path, "cpu.cfs_period_us"), encoding="ascii") as f:
                period = f.read().strip()
        if quota in ("max", "-1"):
            return None
        return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int | None:
    """Whole CPUs allowed by a cgroup CPU quota on this process's cgroup or a parent (v2 or v1).

    A container limited to 1 CPU may still see 2 in its affinity mask; running 2 threads
    there exhausts the quota early in each period and stalls the process for the rest of it.
    Inside a container the cgroup path names the host's hierarchy, so every ancestor down
    to the mount root is tried.
    """
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, v2 = root, True
        elif "cpu" in controllers.split(","):
            base, v2 = os.path.join(root, "cpu"), False
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            quota = _quota(os.path.join(base, *parts[:depth]), v2)
            if quota is not None:
                limits.append(quota)
    return min(limits) if limits else None


def default_threads(pool: int) -> int:
    """CPUs this process may use: its affinity mask, a cgroup quota, numba's pool size."""
    n = len(affinity_cpus())
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, quota)
    return max(1, min(n, pool))


def _read_proc_stat(cpus: set[int], path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over `cpus`.

    Steal counts as busy (the hypervisor ran another VM there), and so does time at a
    positive nice value: nice only ranks processes within one scheduling group (an
    autogroup, a cgroup), so a niced process started from another terminal still takes
    its group's share of the CPUs.
    """
    busy = total = 0
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break
                name, *fields = line.split()
                if name == "cpu" or int(name[3:]) not in cpus:
                    continue
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
                busy += user + nice + system + irq + softirq + steal
                total += user + nice + system + idle + iowait + irq + softirq + steal
    except (OSError, ValueError):
        return None
    return (busy, total) if total else None


class CpuShare:
    """Measures how many of this process's CPUs other processes leave free.

    Between two samples: others = (busy ticks on our CPUs - this process's CPU time) /
    ticks per CPU. Spinning OpenMP workers are this process's time, so they do not look
    like contention; a busy process elsewhere does, whichever started first.
    """

    def __init__(self, stat_path: str = "/proc/stat") -> None:
        self.cpus = affinity_cpus()
        self._set = set(self.cpus)
        self._path = stat_path
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    @property
    def works(self) -> bool:
        """False where the kernel's CPU counters cannot be read (not Linux)."""
        return self._last is not None

    def _sample(self) -> tuple[int, int, float] | None:
        stat = _read_proc_stat(self._set, self._path)
        return None if stat is None else (*stat, time.process_time())

    def free_cpus(self) -> float | None:
        """CPUs that other processes left idle since the last call (None: no counters)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        d_busy, d_total = now[0] - last[0], now[1] - last[1]
        if d_total <= 0:
            return None
        own = (now[2] - last[2]) * self._hz
        others = max(0.0, d_busy - own) / (d_total / len(self.cpus))
        return max(0.0, len(self.cpus) - others)


def threads_for(free: float, limit: int) -> int:
    """The thread count for `free` CPUs: a CPU whose other users take under `BUSY_SHARE` counts."""
    return max(1, min(limit, math.floor(free + BUSY_SHARE)))


class AdaptiveThreads:
    """The default thread count of every backend in this process, re-measured while kernels run.

    Before each parallel kernel a backend reads `value` while the clock is before
    `next_check`, and calls `recheck` (one `CpuShare` sample) once it is past; a backend
    with an explicit ``n_threads`` does neither.
    """

    def __init__(self, limit: int, share: CpuShare | None = None, interval: float = RECHECK_S) -> None:
        self.limit = limit
        self.value = limit
        self._share = share if share is not None else CpuShare()
        self._interval = interval
        self.next_check = time.monotonic() + interval if self._share.works else math.inf
        self._lock = threading.Lock()

    def recheck(self) -> int:
        """Measure the free CPUs (unless another thread is doing so) and return the count."""
        if self._lock.acquire(blocking=False):
            try:
                free = self._share.free_cpus()
                if free is not None:
                    self.value = threads_for(free, self.limit)
                self.next_check = time.monotonic() + self._interval
            finally:
                self._lock.release()
        return self.value

    def current(self) -> int:
        """The thread count, rechecked when `RECHECK_S` has passed."""
        return self.value if time.monotonic() < self.next_check else self.recheck()


_shared: dict[int, AdaptiveThreads] = {}
_shared_lock = threading.Lock()


def shared_adaptive(limit: int) -> AdaptiveThreads:
    """One monitor per process and limit, so several backends read /proc/stat once."""
    with _shared_lock:
        if limit not in _shared:
            _shared[limit] = AdaptiveThreads(limit)
        return _shared[limit]
