"""Checkpoints: ``state_dict`` plus plain metadata, written atomically, loaded safely.

:func:`read_checkpoint` validates an arm checkpoint's metadata (:class:`recdistill.arm.CheckpointMeta`)
and :func:`load_model` is the one way every track loads a trained model (its teacher). Loading uses
``weights_only=True``: a checkpoint pulled from an unvetted DVC remote that carries a
pickled object is refused instead of executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from recdistill.arm import CheckpointMeta, Role, Track
from recdistill.errors import UserError
from recdistill.io import atomic_path
from recdistill.models.registry import Registry
from recdistill.params import describe_error

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint", "recorded_size", "load_model"]


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


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The weights and validated metadata of an arm's ``model.pt`` (CheckpointError if missing,
    unreadable or not an arm checkpoint)."""
    state, raw = load_checkpoint(path, map_location=map_location)
    try:
        return state, CheckpointMeta.model_validate(raw)
    except ValidationError as err:
        raise CheckpointError(f"checkpoint {path} has metadata that is not an arm's: "
                              f"{describe_error(err, CheckpointMeta)}; recreate it with dvc repro") from None




def recorded_size(path: str | Path, key: str) -> tuple[int, CheckpointMeta]:
    """The integer ``extra[key]`` of the checkpoint at ``path`` (a size the model is built
    with, such as ``embed_dim``, read before the model is) and the checkpoint's metadata; a
    :class:`CheckpointError` naming the file when it is missing."""
    _, meta = read_checkpoint(path)
    value = meta.extra.get(key)
    if not isinstance(value, int):
        raise CheckpointError(f"checkpoint {path} records no extra.{key}, so it is not a "
                              f"{meta.track} model written by this code; retrain it (dvc repro)")
    return value, meta


def load_model(path: str | Path, track: Track, registry: Registry[Any], context: Any, *, role: Role | None,
               shape: dict[str, Any], device: torch.device) -> tuple[torch.nn.Module, CheckpointMeta]:
    """The trained model of ``track`` (a teacher, for ``role="teacher"``; any arm for None)
    from ``path``, built through ``registry``, in eval mode.

    Every way it can fail is one :class:`CheckpointError` line naming the file: missing or
    unreadable, another track's or role's checkpoint, a model the registry does not know, or
    data sizes (``shape``: vocabularies, users, items, ...) other than this split's.
    """
    shape = json.loads(json.dumps(shape))  # as stored: tuples become lists
    state, meta = read_checkpoint(path, map_location=device)
    if meta.track != track or role not in (None, meta.role):
        raise CheckpointError(f"checkpoint {path} is a {meta.track} {meta.role}, not a {track} {role or 'model'}")
    if meta.shape != shape:
        differ = sorted(k for k in {*meta.shape, *shape} if meta.shape.get(k) != shape.get(k))
        raise CheckpointError(f"checkpoint {path} was trained on other data ({', '.join(differ)} differ: "
                              f"{ {k: meta.shape.get(k) for k in differ} } vs this split's "
                              f"{ {k: shape.get(k) for k in differ} }); retrain the teacher (dvc repro)")
    try:
        arch = registry.arch(meta.arch, "arch", source=f"checkpoint {path}")
    except UserError as err:
        raise CheckpointError(str(err)) from None
    model = registry.build(arch, context).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit its {arch.name} architecture: "
                              f"{str(err).splitlines()[0]}") from None
    return model.eval(), meta
