"""stages/seq_train.py end to end on a tiny split: every role writes its outs and metrics."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recdistill.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _tiny_data(root: Path, n_users: int = 14, n_items: int = 25) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    train, valid, test = [], [], []
    for u in range(n_users):
        seq = rng.permutation(n_items)[: rng.integers(6, 15)]
        train += [(u, int(i), 100 + p, p) for p, i in enumerate(seq[:-2])]
        valid.append((u, int(seq[-2])))
        test.append((u, int(seq[-1])))
    data = root / "seq"
    data.mkdir(parents=True)
    pd.DataFrame(train, columns=["user", "item", "timestamp", "pos"]).to_parquet(data / "train.parquet")
    pd.DataFrame(valid, columns=["user", "item"]).to_parquet(data / "valid.parquet")
    pd.DataFrame(test, columns=["user", "item"]).to_parquet(data / "test.parquet")
    items = root / "items.parquet"
    pd.DataFrame({"item": np.arange(n_items)}).to_parquet(items)
    return data, items


def _params(path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    small = {"hidden_dim": 8, "n_blocks": 1, "n_heads": 1, "epochs": 2, "eval_every": 1, "batch_size": 4}
    raw["train"]["seq"].update(small, max_len=6)
    raw["distill"]["seq"]["student"].update(small, hidden_dim=4)
    raw["distill"]["seq"].update(n_candidates=5, teacher_top=3)
    raw["evaluate"].update(sampled_negatives=5)
    raw["runtime"].update(device="cpu")
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    spec = importlib.util.spec_from_file_location("seq_train_stage", ROOT / "stages" / "seq_train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["seq_train.py", *argv])
    module.main()


def test_every_role_writes_outs_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, items = _tiny_data(tmp_path / "prepared")
    params = _params(tmp_path / "params.yaml")
    common = ["--data", str(data), "--items", str(items), "--params", str(params), "--seed", "1"]
    outs = {}
    for role, name in [("teacher", "teacher"), ("distill", "distilled"), ("alone", "alone"), ("popular", "popular")]:
        extra = ["--teacher", str(outs["teacher"] / "model.pt")] if role == "distill" else []
        out, metrics = tmp_path / "models" / f"{name}-s1", tmp_path / "metrics" / f"{name}-s1.json"
        _run(monkeypatch, role, str(out), str(metrics), *common, *extra)
        outs[role] = out
        assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "predictions.parquet", "run.json"]
        record = json.loads(metrics.read_text())
        assert (record["track"], record["model"], record["seed"]) == ("seq", name, 1)
        for key in ("valid/ndcg@10", "test/hr@10", "test/ndcg@10", "test/hr@20", "test/ndcg@20",
                    "test/sampled5_hr@10", "test/sampled5_ndcg@10"):
            assert 0.0 <= record["metrics"][key] <= 1.0
        assert record["cost"]["latency_unit"] == "all users" and record["cost"]["params"] > 0
        top = pd.read_parquet(out / "predictions.parquet")
        assert list(top.columns) == ["user", "rank", "item", "score"] and len(top) == 14 * 20
        assert (top.groupby("user")["rank"].apply(list) == [list(range(1, 21))] * 14).all()
    _, meta = load_checkpoint(outs["distill"] / "model.pt")
    assert meta["model"]["hidden_dim"] == 4 and meta["role"] == "distill"
    assert json.loads((outs["teacher"] / "run.json").read_text())["stage"] == "seq-teacher"


def test_distill_without_teacher_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        _run(monkeypatch, "distill", str(tmp_path / "o"), str(tmp_path / "m.json"), "--seed", "0")
