"""Checkpoints: ``state_dict`` plus plain metadata, written atomically, loaded safely.

Loading uses ``weights_only=True``: a checkpoint pulled from an unvetted DVC remote that
carries a pickled object is refused instead of executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recdistill.errors import UserError
from recdistill.io import atomic_path

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable or not a recdistill checkpoint."""


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``{"state_dict", "meta"}`` to ``path`` atomically (tensors moved to CPU).

    The same weights and meta give the same bytes, so DVC sees a retrained but unchanged
    checkpoint as unchanged: torch.save gets an open file, not the path, because given a
    path it names the archive's root folder after the file, here a random temp name.
    """
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        torch.save({"state_dict": cpu_state, "meta": meta}, out)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise naming the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the stage that trains it "
                              "first (dvc repro)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        reason = next((line.strip() for line in str(err).splitlines()
                       if "GLOBAL" in line or "Unsupported" in line), str(err).splitlines()[0] if str(err) else "")
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely (weights_only=True): "
            f"{type(err).__name__}: {reason}. recdistill never writes pickled objects, so this file "
            "is damaged or may be malicious: do not load it with weights_only=False; recreate it "
            "with `dvc repro` of the stage that writes it") from None
    if not isinstance(obj, dict) or set(obj) != {"state_dict", "meta"}:
        raise CheckpointError(f"checkpoint {path} is not a recdistill checkpoint "
                              "(expected keys 'state_dict' and 'meta')")
    return obj["state_dict"], obj["meta"]
