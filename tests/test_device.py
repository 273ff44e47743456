"""The runtime set-up: device resolution, CPU threads, the heap that keeps freed memory."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from recdistill.params import RuntimeParams
from recdistill.train import configure_cpu, resolve_device
from recdistill.train.device import retain_freed_memory


@pytest.fixture
def restore_threads():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_device_and_threads(restore_threads: None) -> None:
    assert resolve_device(RuntimeParams(device="cpu", threads=1)) == torch.device("cpu")
    assert torch.get_num_threads() == 1
    configure_cpu(0)  # 0 keeps the current count
    assert torch.get_num_threads() == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"runtime.device = 'cuda' but torch sees no CUDA device"):
        resolve_device(RuntimeParams(device="cuda"))


FAULTS_PER_STEPS = """
import resource, sys, torch
from recdistill.train.device import retain_freed_memory
if sys.argv[1] == "retain":
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
    """In a fresh process each, 20 steps page-fault their tensors back in under glibc's
    defaults (about 100k minor faults here) and not at all once the heap keeps them."""
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", FAULTS_PER_STEPS, mode], capture_output=True,
                             text=True, check=True)
        return int(run.stdout)

    default, retained = faults("default"), faults("retain")
    assert default > 10_000
    assert retained < default / 100
