"""Determinism on CPU: the same params give bit-identical metrics, weights and outputs twice."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mini_stage
import pandas as pd
import pytest
import relkit
import torch

from recdistill.train import load_checkpoint

def _args(seed: int) -> argparse.Namespace:
    return argparse.Namespace(seed=seed, dim=8, batch_size=64, epochs=4, nan_at="", progress="",
                              batch_sleep=0.0)


def _fit(seed: int) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    torch.set_num_threads(1)
    epochs: list[tuple[int, dict[str, float]]] = []
    model, result = mini_stage.train(_args(seed), lambda e, m: epochs.append((e, m)))
    return {k: v.clone() for k, v in model.state_dict().items()}, result.history


def test_fit_twice_is_bit_identical() -> None:
    """Embeddings, dropout, Adam and seeded permutations: every weight and metric equal bit for bit."""
    (state_a, hist_a), (state_b, hist_b) = _fit(3), _fit(3)
    assert hist_a == hist_b  # floats compared with ==, not approximately
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    state_c, hist_c = _fit(4)
    assert hist_c != hist_a  # the seed matters: identity above is not a constant


@pytest.mark.slow
def test_ctr_stage_twice_is_bit_identical(workspace: Path, tmp_path: Path) -> None:
    """The real ctr-teacher stage, run twice from scratch with the same params: every file it
    writes is the same bytes (no wall clock, no run id), so a rerun leaves dvc.lock and git as
    they are."""
    argv = [relkit.stage("ctr_train.py"), "teacher", "--seed", "0", "--prepared", "data/prepared/ctr",
            "--canonical", "data/canonical", "--out", "models/ctr/teacher-s0",
            "--metrics", "metrics/ctr/teacher-s0.json"]
    copies = [relkit.copy_workspace(workspace, tmp_path / f"run{i}") for i in range(2)]
    stores = [relkit.seeded_store(tmp_path / f"{i}.db") for i in range(2)]
    procs = relkit.run_many([lambda ws=ws, db=db: relkit.run(argv, ws, db)
                             for ws, db in zip(copies, stores, strict=True)])
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (ws / "models/ctr/teacher-s0" for ws in copies)
    ma, mb = (json.loads((ws / "metrics/ctr/teacher-s0.json").read_text()) for ws in copies)
    assert set(ma["metrics"]) >= {"test/auc", "test/logloss", "valid/auc"}
    metrics = [(ws / "metrics/ctr/teacher-s0.json").read_bytes() for ws in copies]
    assert metrics[0] == metrics[1] and sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for file in a.iterdir():
        assert relkit.sha256(file) == relkit.sha256(b / file.name), file.name
    pd.testing.assert_frame_equal(pd.read_parquet(a / "predictions.parquet"),
                                  pd.read_parquet(b / "predictions.parquet"), check_exact=True)
    (sa, meta_a), (sb, meta_b) = load_checkpoint(a / "model.pt"), load_checkpoint(b / "model.pt")
    assert meta_a == meta_b
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.slow
def test_prepare_twice_is_byte_identical(workspace: Path, tmp_path: Path) -> None:
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    proc = relkit.run([relkit.stage("prepare.py"), "data/canonical", "data/again", "metrics/again.json"],
                      ws, relkit.seeded_store(tmp_path / "mlflow.db"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = {k: v[0] for k, v in relkit.snapshot(ws / "data/prepared").items()}
    second = {k: v[0] for k, v in relkit.snapshot(ws / "data/again").items()}
    assert first == second and len(first) > 15
    assert (ws / "metrics/prepare.json").read_bytes() == (ws / "metrics/again.json").read_bytes()
