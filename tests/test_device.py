"""The runtime set-up: device resolution, CPU threads, the heap that keeps freed memory."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from recdistill.params import RuntimeParams
from recdistill.train import configure_cpu, resolve_device

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
