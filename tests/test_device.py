"""The runtime set-up: device resolution, CPU threads (fixed, or shared among the jobs running\nat once), the heap that keeps freed memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from recdistill import tracking
from recdistill.params import RuntimeParams
from recdistill.train import configure_cpu, fit, resolve_device, threads

CPU = RuntimeParams(device="cpu", amp="none", threads=1)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_device_and_threads(restore_threads: None) -> None:
    assert resolve_device(CPU) == torch.device("cpu")
    assert torch.get_num_threads() == 1
    configure_cpu(0)  # 0 keeps the current count
    assert torch.get_num_threads() == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"runtime.device = 'cuda' but torch sees no CUDA device"):
        resolve_device(CPU.model_copy(update={"device": "cuda"}))


FAULTS_PER_STEPS = """
import resource, torch
from recdistill.train.device import retain_freed_memory
assert retain_freed_memory()
def step():  # a training step's worth of short-lived tensors: three of 10 MB, freed together
    tensors = [torch.ones(10 << 18) for _ in range(3)]
    del tensors
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults() -> None:
    """In a fresh process, 20 steps touch 150k pages of new tensors; with the heap keeping
    freed memory they are served without page faults. (glibc's defaults fault from 5k to
    100k of them back in, and on some starts none: it depends on the heap's layout.)"""
    touched = 20 * 3 * (10 << 20) // 4096  # pages
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", FAULTS_PER_STEPS], capture_output=True,
                             text=True, check=True)
        assert int(run.stdout) < touched / 100


# ------------------------------------------------------------- runtime.threads: auto
@pytest.fixture
def main_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_threads: None) -> Iterator[Path]:
    """A DVC repository as the cwd, on a pretend 4-core machine; the process leaves the
    registry and torch gets its thread count back afterwards."""
    root = tmp_path / "main"
    (root / ".dvc").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(root)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    threads.release()  # a stage an earlier test ran in this process may have registered it elsewhere
    yield root
    threads.release()


@pytest.fixture
def other_job() -> Iterator[subprocess.Popen[bytes]]:
    """Another live process, to register as a second job."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def _register(main: Path, pid: int) -> Path:
    owner, start = tracking.process_owner(), tracking.process_start(pid)
    assert owner is not None and start is not None
    return threads.Registry(main / threads.REGISTRY, owner).enter(pid, start)


@pytest.mark.skipif(tracking.process_owner() is None, reason="the registry needs Linux's /proc")
def test_registry_counts_live_processes_of_its_owner(tmp_path: Path, other_job: subprocess.Popen[bytes]) -> None:
    """Two live processes count 2; the entry of a process that is gone, and of a pid now
    naming another process, is removed; another host's entry is left alone, uncounted."""
    owner = tracking.process_owner() or ""
    registry = threads.Registry(tmp_path / "jobs", owner)
    mine = registry.enter(os.getpid(), tracking.process_start(os.getpid()) or "")
    other = registry.enter(other_job.pid, tracking.process_start(other_job.pid) or "")
    reused = registry.enter(os.getpid(), "1")  # this pid, as an earlier process held it
    elsewhere = threads.Registry(tmp_path / "jobs", "another-host/boot/pid:[1]").enter(other_job.pid, "1")
    assert registry.count() == 2
    assert not reused.exists() and elsewhere.exists() and mine.exists()
    other_job.kill()
    other_job.wait()
    assert registry.count() == 1 and not other.exists()


@pytest.mark.skipif(tracking.process_owner() is None, reason="the registry needs Linux's /proc")
def test_auto_shares_the_cores_and_follows_the_jobs(main_repo: Path,
                                                     other_job: subprocess.Popen[bytes]) -> None:
    """A stage alone takes every core; each epoch it recounts, so it drops to cores // 2
    while a second job runs and goes back up when that one ends."""
    seen: list[int] = []
    second: list[Path] = []

    def batches(epoch: int) -> list[torch.Tensor]:
        seen.append(torch.get_num_threads())
        return [torch.ones(4, 1)]

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            second.append(_register(main_repo, other_job.pid))  # a second job starts
        elif epoch == 2:
            other_job.kill()  # ... and ends: its entry is left behind, as after a SIGKILL
            other_job.wait()

    assert resolve_device(CPU.model_copy(update={"threads": "auto"})) == torch.device("cpu")
    assert torch.get_num_threads() == 4
    model = torch.nn.Linear(1, 1)
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), batches=batches,
        loss_fn=lambda x: model(x).pow(2).mean(), validate=lambda: {"valid/loss": 1.0},
        epochs=3, monitor="valid/loss", mode="min", patience=5, name="lin", on_epoch=on_epoch,
        progress=False)
    assert seen == [4, 2, 4]
    assert not second[0].exists()  # the dead job's entry went with the recount
    [entry] = (main_repo / threads.REGISTRY).iterdir()
    assert entry.name.startswith(f"{os.getpid()}.")
    threads.release()
    assert not entry.exists()


def test_an_explicit_count_wins_and_registers_nothing(main_repo: Path) -> None:
    resolve_device(CPU.model_copy(update={"threads": 3}))
    assert torch.get_num_threads() == 3
    threads.rebalance()  # what fit does each epoch: nothing, the count is the user's
    assert torch.get_num_threads() == 3
    assert not (main_repo / threads.REGISTRY).exists()


def test_auto_outside_a_dvc_repository_takes_every_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        restore_threads: None) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(threads, "cores", lambda: 3)
    assert threads.share_cores() == 3 == torch.get_num_threads()
    assert not (tmp_path / ".dvc").exists()


@pytest.mark.skipif(tracking.process_owner() is None, reason="the registry needs Linux's /proc")
def test_a_stage_in_an_experiment_copy_registers_with_the_main_repository(main_repo: Path) -> None:
    """Jobs of `dvc queue start -j 2` run in copies under .dvc/tmp/exps; they meet in the main
    repository's registry, and a process leaves it when it exits."""
    copy = main_repo / ".dvc/tmp/exps/tmpq1"
    (copy / ".dvc").mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    code = ("from pathlib import Path; from recdistill.train import threads\n"
            "threads.share_cores()\n"
            "print(len(list(Path(sys.argv[1]).iterdir())))\n")
    run = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(main_repo / threads.REGISTRY)],
                         cwd=copy, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "1"  # registered in the main repository while it ran
    assert list((main_repo / threads.REGISTRY).iterdir()) == []  # and gone at exit
    assert not (copy / threads.REGISTRY).exists()
