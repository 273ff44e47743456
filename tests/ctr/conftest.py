"""Fixtures of the ctr tests: a tiny ctr dataset from the synthetic MovieLens (tests/synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic

from recdistill.data.canonical import Canonical, parse_archive, write_canonical
from recdistill.data.ctr_features import CtrFeatures, build_features
from recdistill.data.splits import Split, ctr_split
from recdistill.params import DataParams


@pytest.fixture(scope="module")
def ctr_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Canonical, Split]:
    """Canonical tables of the synthetic archive and their ctr split."""
    tmp = tmp_path_factory.mktemp("ctr-archive")
    canonical = parse_archive(synthetic.write_grouplens(synthetic.make(), tmp / "ml-100k.zip"))
    return canonical, ctr_split(canonical.ratings, DataParams(), np.random.default_rng(0))


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
