"""``runtime.threads: auto``: the CPU cores shared among the stage processes running at once.

Why: ``dvc queue start -j N`` runs N experiments' stages side by side on one machine. With a
fixed count of torch threads each, two 2-thread jobs on the 2-core machine oversubscribe it
and a DAGFM epoch took 2-4 s instead of 0.3 s (issue 20). With ``auto`` each of the N stage
processes training on the CPU gets ``max(1, cores // N)`` threads, ``cores`` being the CPUs
this process may run on (its affinity mask: ``taskset``, a cgroup cpuset).

How N is known: each such process adds an empty file ``<pid>.<start>.<owner>`` to
``<main>/.dvc/tmp/recdistill-jobs/`` and removes it at exit. ``<main>`` is the main repository
(:func:`recdistill.tracking.store_root`), so the jobs of its experiment copies meet in one
place; ``start`` is the pid's start time, so a reused pid is told apart; ``owner`` a hash of
the host, boot and pid namespace, so entries of other machines sharing the checkout, whose
cores are not ours, are not counted. The entry of a process that is gone (SIGKILLed) is
removed by the next count. A process with an explicit count neither registers nor adapts.

The share is computed again before every epoch (:func:`rebalance`, called by ``fit``), so a
stage that started alone drops to ``cores // 2`` threads when a second job starts and goes
back up when that one ends: torch's intra-op thread count may change at any time (the
inter-op pool may not, and is left alone). Results then depend on the thread counts a stage
ran with, as they do on a fixed count (README); a fixed ``runtime.threads`` keeps them
independent of what else runs. Off Linux (no /proc to tell live processes) and outside a
DVC repository (no jobs to share with) nothing registers and ``auto`` takes every core.
``recdistill.tracking`` (and with it MLflow, 2 s to import) is imported only by a process
that shares its cores, not by every user of ``recdistill.train``.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["REGISTRY", "Registry", "cores", "share", "share_cores", "rebalance", "release"]

log = logging.getLogger(__name__)
REGISTRY = Path(".dvc/tmp/recdistill-jobs")  # under the main repository; DVC git-ignores .dvc/tmp


def cores() -> int:
    """The CPUs this process may run on (its affinity mask), not necessarily the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def share(jobs: int, cpus: int) -> int:
    """Threads for one of ``jobs`` processes sharing ``cpus`` cores: at least one.

    >>> share(1, 2), share(2, 2), share(3, 2), share(2, 16), share(0, 4)
    (2, 1, 1, 8, 4)
    """
    return max(1, cpus // max(1, jobs))


@dataclass(frozen=True)
class Registry:
    """The stage processes of one owner (host, boot, pid namespace) that share its cores:
    one empty file each in ``path``."""

    path: Path
    owner: str

    @property
    def _suffix(self) -> str:
        return "." + hashlib.sha256(self.owner.encode()).hexdigest()[:12]

    def enter(self, pid: int, start: str) -> Path:
        """Register process ``pid`` (started at ``start``); returns its entry."""
        self.path.mkdir(parents=True, exist_ok=True)
        entry = self.path / f"{pid}.{start}{self._suffix}"
        entry.touch()
        return entry

    def count(self) -> int:
        """The live processes of this owner; removes the entries of those that are gone."""
        from recdistill.tracking import process_start

        live = 0
        for entry in self.path.glob(f"*{self._suffix}"):
            pid, _, start = entry.name.removesuffix(self._suffix).partition(".")
            if pid.isdigit() and process_start(int(pid)) == start:
                live += 1
            else:
                entry.unlink(missing_ok=True)
        return live


@dataclass
class _Share:
    """This process's place in a registry and the thread count it last set."""

    registry: Registry
    entry: Path
    threads: int  # 0 until the first rebalance() sets it


_share: _Share | None = None  # set by share_cores(): torch's thread count is per process too


def share_cores() -> int:
    """Register this process as a CPU stage, set torch's threads to its share of the cores and
    keep them at its share at each :func:`rebalance` until :func:`release` (called at exit).
    Returns the thread count; every core when there is nowhere to register."""
    global _share
    from recdistill.tracking import process_owner, process_start, store_root

    if _share is not None:
        return _share.threads
    main, owner, start = store_root(), process_owner(), process_start(os.getpid())
    if owner is None or start is None or not (main / ".dvc").is_dir():
        torch.set_num_threads(cores())
        return cores()
    registry = Registry(main / REGISTRY, owner)
    _share = _Share(registry, registry.enter(os.getpid(), start), threads=0)
    atexit.register(release)
    rebalance()
    return _share.threads


def rebalance() -> None:
    """Set torch's threads to this process's current share of the cores, logging a change;
    a no-op unless :func:`share_cores` registered the process (explicit counts, CUDA,
    benchmarks, tests calling ``fit`` directly)."""
    if _share is None:
        return
    jobs, cpus = _share.registry.count(), cores()
    threads = share(jobs, cpus)
    if threads != _share.threads:
        log.info("torch threads: %d (%d cores, %d stage processes sharing them)", threads, cpus, jobs)
        torch.set_num_threads(threads)
        _share.threads = threads


def release() -> None:
    """Remove this process's entry and stop rebalancing (idempotent)."""
    global _share
    if _share is not None:
        _share.entry.unlink(missing_ok=True)
        _share = None
