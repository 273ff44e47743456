"""The repository's params.yaml, parsed: params.yaml is the only source of defaults, so tests
start from it and change what they need with ``model_copy(update=...)``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from recdistill import params

REPO = Path(__file__).resolve().parents[1]


@cache
def repo_params() -> params.Params:
    return params.load(REPO / "params.yaml")
