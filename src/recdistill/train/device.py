"""Device selection (``runtime.device``) and optional mixed precision (``runtime.amp``)."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable

import torch

from recdistill.params import RuntimeParams

log = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(runtime: RuntimeParams) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device = 'cuda' but torch sees no CUDA device; "
                           "use 'auto' or 'cpu', or install a CUDA build of torch (README)")
    if runtime.device == "cpu" or not torch.cuda.is_available():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
    log.info("device: %s (%s)", device, torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads")
    return device


def autocast(runtime: RuntimeParams, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Autocast to bf16/fp16 on CUDA when ``runtime.amp`` asks for it; a no-op otherwise."""
    if runtime.amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=_AMP_DTYPES[runtime.amp])


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
