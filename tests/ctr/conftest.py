"""Fixtures of the ctr tests: a tiny ctr dataset from the synthetic MovieLens (tests/synthetic.py),
and the repository's params.yaml with small training budgets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import synthetic
import yaml
from pydantic import BaseModel

from recdistill import params
from recdistill.data.canonical import Canonical, parse_archive, write_canonical
from recdistill.data.ctr_features import CtrFeatures, build_features
from recdistill.data.splits import Split, ctr_split

REPO = Path(__file__).resolve().parents[2]
SMALL_OPTIM = {"epochs": 3, "patience": 2, "batch_size": 128}


def _set(node: BaseModel, keys: list[str], value: Any) -> BaseModel:
    head, *rest = keys
    current = getattr(node, head)
    if rest:
        value = _set(current, rest, value)
    elif isinstance(current, BaseModel) and isinstance(value, dict):
        value = type(current).model_validate(value)
    return node.model_copy(update={head: value})


def with_keys(p: params.Params, updates: dict[str, Any]) -> params.Params:
    """A copy of ``p`` with the values at the given key paths (``train.ctr.optim.epochs``) replaced;
    a dict replaces a whole block (``train.ctr.model``)."""
    for path, value in updates.items():
        p = _set(p, path.split("."), value)  # type: ignore[assignment]
    return p


SmallParams = Callable[..., params.Params]


@pytest.fixture(scope="session")
def small_params() -> SmallParams:
    """``small_params(updates={key path: value})``: params.yaml on the CPU with 3-epoch budgets,
    depth 2 and embed_dim 4, then ``updates`` (see :func:`with_keys`)."""
    base = with_keys(params.load(REPO / "params.yaml"), {
        "runtime": {"device": "cpu", "amp": "none", "threads": 1}, "seeds": (0,),
        "train.ctr.embed_dim": 4, "train.ctr.model.depth": 2, "distill.ctr.student.model.depth": 2,
        **{f"train.ctr.optim.{k}": v for k, v in SMALL_OPTIM.items()},
        **{f"distill.ctr.student.optim.{k}": v for k, v in SMALL_OPTIM.items()}})
    return lambda updates=None: with_keys(base, updates or {})


@pytest.fixture()
def params_file(tmp_path: Path) -> Callable[[params.Params], Path]:
    """Writes a Params as a params.yaml under ``tmp_path`` (for the stage's ``--params``)."""
    def write(p: params.Params, name: str = "params.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
        return path
    return write


@pytest.fixture(scope="module")
def ctr_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Canonical, Split]:
    """Canonical tables of the synthetic archive and their ctr split."""
    tmp = tmp_path_factory.mktemp("ctr-archive")
    canonical = parse_archive(synthetic.write_grouplens(synthetic.make(), tmp / "ml-100k.zip"))
    data = params.load(REPO / "params.yaml").data
    return canonical, ctr_split(canonical.ratings, data, np.random.default_rng(0))


@pytest.fixture(scope="module")
def ctr_features(ctr_tables: tuple[Canonical, Split]) -> CtrFeatures:
    canonical, split = ctr_tables
    return build_features({"train": split.train, "valid": split.valid, "test": split.test},
                          canonical.users, canonical.items)


@pytest.fixture()
def ctr_files(tmp_path: Path, ctr_tables: tuple[Canonical, Split]) -> tuple[Path, Path]:
    """data/canonical and data/prepared/ctr written under ``tmp_path``."""
    canonical, split = ctr_tables
    write_canonical(canonical, tmp_path / "canonical")
    prepared = tmp_path / "prepared" / "ctr"
    prepared.mkdir(parents=True)
    for name in ("train", "valid", "test"):
        getattr(split, name).to_parquet(prepared / f"{name}.parquet", index=False)
    return tmp_path / "canonical", prepared
