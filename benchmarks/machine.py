"""Describe the machine a benchmark ran on, and write its JSON result."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def describe() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }


def machine_tag() -> str:
    gpu = describe()["gpu"]
    return "gpu-" + gpu.lower().replace(" ", "-") if gpu else f"cpu-{os.cpu_count()}cores"


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write results/<name>-<machine>.json (read back by benchmarks/results.py)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{machine_tag()}.json"
    path.write_text(json.dumps({"machine": describe(), **payload}, indent=2, sort_keys=True) + "\n")
    return path
