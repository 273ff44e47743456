"""The one training loop, early stopping, checkpoints, device and seeding."""

from recdistill.train.checkpoint import (CheckpointError, load_checkpoint, load_model, read_checkpoint,
                                         save_checkpoint)
from recdistill.train.device import autocast, configure_cpu, median_ms, resolve_device
from recdistill.train.loop import FitResult, NonFiniteLossError, fit, history_records
from recdistill.train.seed import seed_everything

__all__ = [
    "CheckpointError", "FitResult", "NonFiniteLossError", "autocast", "configure_cpu", "fit", "history_records",
    "load_checkpoint", "load_model", "read_checkpoint", "median_ms", "resolve_device", "save_checkpoint", "seed_everything",
]
