"""End to end: stages/cf_train.py meta -> distill, and alone, on tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recdistill.train import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from test_cf_train_eval import synthetic_splits  # noqa: E402

pytestmark = pytest.mark.slow  # four subprocesses that each import torch and mlflow (~20 s CPU)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cf_stage")
    splits = synthetic_splits(2)
    (root / "cf").mkdir()
    for name in ("train", "valid", "test"):
        part = getattr(splits, name)
        pd.DataFrame({"user": part.users.numpy(), "item": part.items.numpy()}).to_parquet(
            root / "cf" / f"{name}.parquet")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runtime"] = {"device": "cpu", "amp": "none", "threads": 1}
    small = {"embed_dim": 8, "lr": 0.02, "batch_size": 128, "epochs": 6, "patience": 2, "eval_every": 2}
    raw["train"]["cf"].update(small)
    raw["distill"]["cf"]["student"].update(small)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "dvc.yaml").write_text("stages: {}\n")  # marks the repo root for tracking
    return root


def run_stage(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),  # faster than sqlite
           "MLFLOW_ALLOW_FILE_STORE": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "stages" / "cf_train.py"), *args,
                           "--params", str(root / "params.yaml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_meta_then_distill_then_alone_write_their_outs(workdir: Path) -> None:
    for role, model, extra in [("meta", "meta", []), ("alone", "alone", []),
                               ("distill", "distilled", ["--meta", "models/meta/model.pt"])]:
        done = run_stage(workdir, role, "cf", f"models/{model}", f"metrics/{model}.json", "--seed", "0",
                         *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        out = workdir / "models" / model
        assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "predictions.parquet",
                                                         "run.json"]
        _, meta = load_checkpoint(out / "model.pt")
        assert meta["role"] == role and meta["model"] == ("lightgcn" if role == "meta" else "mf")
        metrics = json.loads((workdir / "metrics" / f"{model}.json").read_text())
        assert metrics["track"] == "cf" and metrics["model"] == model and metrics["seed"] == 0
        for key in ("valid/ndcg@20", "test/recall@10", "test/recall@20", "test/ndcg@10", "test/ndcg@20",
                    "test/auc"):
            assert 0.0 <= metrics["metrics"][key] <= 1.0
        assert metrics["cost"]["params"] == (60 + 40) * 8 and metrics["cost"]["latency_unit"] == "all users"
        preds = pd.read_parquet(out / "predictions.parquet")
        assert list(preds.columns) == ["user", "rank", "item", "score"] and len(preds) == 60 * 20
        assert json.loads((out / "run.json").read_text())["run_id"]


def test_distill_without_meta_is_a_usage_error(workdir: Path) -> None:
    done = run_stage(workdir, "distill", "cf", "models/x", "metrics/x.json", "--seed", "0")
    assert done.returncode == 2 and "--meta is required for role distill" in done.stderr
    assert not (workdir / "models" / "x").exists()
