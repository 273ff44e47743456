"""End to end: stages/cf_train.py teacher -> student, and alone, on tiny synthetic data; the
metrics files against a recomputation from the predictions and the history."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recdistill.arm import read_metrics
from recdistill.train.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from test_cf_train_eval import recomputed, synthetic_splits  # noqa: E402

pytestmark = pytest.mark.slow  # subprocesses that each import torch and mlflow (~5 s CPU each)
ARMS = [("teacher", "meta", []), ("alone", "alone", []),
        ("student", "distilled", ["--teacher", "models/meta/model.pt"])]


def write_params(root: Path, name: str, select: str = "ndcg@20") -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runtime"] = {"device": "cpu", "amp": "none", "threads": 1}
    small = {"lr": 0.02, "batch_size": 128, "epochs": 6, "patience": 2, "eval_every": 2}
    raw["train"]["cf"]["embed_dim"] = 8
    raw["train"]["cf"]["optim"].update(small)
    raw["distill"]["cf"]["student"]["optim"].update(small)
    raw["evaluate"]["select"]["cf"] = select
    path = root / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cf_stage")
    splits = synthetic_splits(2)
    (root / "cf").mkdir()
    for name in ("train", "valid", "test"):
        part = getattr(splits, name)
        pd.DataFrame({"user": part.users.numpy(), "item": part.items.numpy()}).to_parquet(
            root / "cf" / f"{name}.parquet")
    write_params(root, "params.yaml")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")  # the repo root; the params each stage logs
    return root


def run_stage(root: Path, *args: str, params: str = "params.yaml") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),  # faster than sqlite
           "MLFLOW_ALLOW_FILE_STORE": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "stages" / "cf_train.py"), *args,
                           "--params", str(root / params)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_teacher_then_student_and_alone_write_their_outs(workdir: Path) -> None:
    test = synthetic_splits(2).test
    for role, model, extra in ARMS:
        done = run_stage(workdir, role, "cf", f"models/{model}", f"metrics/{model}.json", "--seed", "0",
                         *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        out = workdir / "models" / model
        assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "predictions.parquet"]
        _, meta = read_checkpoint(out / "model.pt")
        assert (meta.role, meta.arch["name"]) == (role, "lightgcn" if role == "teacher" else "mf")
        [record] = read_metrics(workdir / "metrics" / f"{model}.json")
        assert (record.track, record.model, record.role, record.seed) == ("cf", model, role, 0)
        preds = pd.read_parquet(out / "predictions.parquet")
        assert list(preds.columns) == ["user", "rank", "item", "score"] and len(preds) == 60 * 20
        for key, value in recomputed(preds, test, 20).items():
            assert record.metrics[key] == pytest.approx(value, abs=1e-9), key
        history = json.loads((out / "history.json").read_text())
        assert len(history) == record.epochs and history[record.best_epoch - 1]["epoch"] == record.best_epoch
        selected = history[record.best_epoch - 1]["valid/ndcg@20"]
        assert selected == record.metrics["valid/ndcg@20"] == meta.selection["valid/ndcg@20"]
        assert selected == max(row["valid/ndcg@20"] for row in history if row["valid/ndcg@20"] is not None)
        assert record.cost.params == (60 + 40) * 8 and record.cost.device == "cpu"


def test_student_without_teacher_is_a_usage_error(workdir: Path) -> None:
    done = run_stage(workdir, "student", "cf", "models/x", "metrics/x.json", "--seed", "0")
    assert done.returncode == 2 and "--teacher PATH (the meta model's model.pt) is required" in done.stderr
    assert not (workdir / "models" / "x").exists()


def test_a_selection_metric_the_track_does_not_compute_fails_before_any_work(workdir: Path) -> None:
    write_params(workdir, "bad.yaml", select="ndcg@50")
    done = run_stage(workdir, "teacher", "cf", "models/y", "metrics/y.json", "--seed", "0", params="bad.yaml")
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "recdistill.params.ParamsError: params.yaml: evaluate.select.cf = 'ndcg@50' is invalid")
    assert not (workdir / "models" / "y").exists() and not (workdir / "metrics" / "y.json").exists()


def test_another_arms_checkpoint_is_refused_naming_the_stage_that_trains_the_teacher(workdir: Path) -> None:
    done = run_stage(workdir, "alone", "cf", "models/a2", "metrics/a2.json", "--seed", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_stage(workdir, "student", "cf", "models/z", "metrics/z.json", "--seed", "0",
                     "--teacher", "models/a2/model.pt")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "recdistill.train.checkpoint.CheckpointError: checkpoint models/a2/model.pt is a cf alone, "
        "not a cf teacher [the meta model of cf-distill@0 is trained by cf-meta@0]")
    assert not (workdir / "models" / "z").exists()
