"""Device selection (``runtime.device``), the CPU set-up (``runtime.threads``, the
allocator) and optional mixed precision (``runtime.amp``)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import platform
import statistics
import time
from collections.abc import Callable
from typing import Literal

import torch

from recdistill.params import RuntimeParams
from recdistill.train.threads import share_cores

log = logging.getLogger(__name__)

Amp = Literal["none", "bf16", "fp16"]  # runtime.amp
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, glibc's malloc.h
_RETAIN = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 256 << 20), (_M_TOP_PAD, 64 << 20))


def retain_freed_memory() -> bool:
    """Keep memory that torch frees on the heap for the next training step, instead of
    glibc's default of returning it to the OS and page-faulting it back in: the step's
    tensors of a few MB (CIN's (M*F, N) outer products, LightGCN's propagated embeddings)
    are served from the heap (mmap threshold 32 MB), the heap grows 64 MB at a time and is
    trimmed only above 256 MB free, so a process holds at most that much memory it does not
    use. On the 2-core machine, with the feature-major CIN, this cut a CIN training epoch
    from 1.9 s to 1.2 s on one thread (benchmarks/ctr_speed.py). Returns whether glibc
    accepted every setting; a no-op returning False where the C library is not glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
        accepted = [libc.mallopt(param, value) == 1 for param, value in _RETAIN]
    except (OSError, AttributeError):
        return False
    log.debug("retain freed memory on the heap: %s", accepted)
    return all(accepted)


def configure_cpu(threads: int) -> None:
    """The CPU set-up shared by the training stages (through ``resolve_device``) and the
    benchmarks: ``threads`` torch threads (0 keeps the current count) and a heap that keeps
    freed memory (``retain_freed_memory``)."""
    if threads:
        torch.set_num_threads(threads)
    retain_freed_memory()


def resolve_device(runtime: RuntimeParams) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error.
    Also applies the CPU set-up (``configure_cpu``): ``runtime.threads: auto`` on the CPU
    shares the cores with the other stage processes running at once
    (``recdistill.train.threads``); on CUDA it keeps torch's default."""
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device = 'cuda' but torch sees no CUDA device; "
                           "use 'auto' or 'cpu', or install a CUDA build of torch (README)")
    if runtime.device == "cpu" or not torch.cuda.is_available():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
    threads = runtime.threads
    if threads == "auto":
        threads = share_cores() if device.type == "cpu" else 0
    configure_cpu(threads)
    log.info("device: %s (%s)", device, torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads")
    return device


def autocast(amp: Amp, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Autocast to bf16/fp16 on CUDA when ``runtime.amp`` asks for it; a no-op otherwise."""
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=_AMP_DTYPES[amp])


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    """Median wall time (ms) of ``fn()`` over ``repeats`` calls after one warm-up call;
    CUDA is synchronised around each call so queued kernels are counted.

    >>> median_ms(lambda: sum(range(10)), torch.device("cpu")) >= 0
    True
    """
    times = []
    for call in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if call:  # the first call warms up
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)
