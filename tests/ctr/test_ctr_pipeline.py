"""ctr track: metrics against scikit-learn, counted multiply-adds against hand counts, teacher
validation and loading errors, and the three stage roles end to end on a tiny dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import log_loss, roc_auc_score

from recdistill import ctr, params
from recdistill.data.ctr_features import CtrFeatures
from recdistill.models.cin import CIN
from recdistill.models.crossnet import CrossNet
from recdistill.models.dagfm import DAGFM
from recdistill.train import CheckpointError

REPO = Path(__file__).resolve().parents[2]


def test_evaluate_matches_scikit_learn(ctr_features: CtrFeatures) -> None:
    torch.manual_seed(0)
    model = DAGFM(ctr_features.cardinalities, ctr_features.n_multi, embed_dim=4, depth=2)
    got = ctr.evaluate(model, ctr_features.test, "test")
    probs = torch.sigmoid(ctr.predict(model, ctr_features.test)).double().numpy()
    labels = ctr_features.test.labels.numpy()
    assert got["test/auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-9)
    assert got["test/logloss"] == pytest.approx(log_loss(labels, probs), abs=1e-6)


def hand_macs(name: str, F: int, D: int, G: int, L: int, H: int = 0) -> int:
    """Multiply-adds per example, counted by hand from each model's equations."""
    N, pooling = F * D, G * D  # genre mean-pooling is a (G,) @ (G, D) product
    if name == "crossnet-vector":
        return pooling + L * (N + N) + N  # w . x, x0 * scalar; head v . x
    if name == "crossnet-matrix":
        return pooling + L * (N * N + N) + N  # W x, x0 * (.); head
    if name == "cin":
        sizes = [F] + [H] * L
        return pooling + sum(sizes[k] * F * D + sizes[k + 1] * sizes[k] * F * D
                             for k in range(L)) + L * H + N  # outer products, W^k; head, linear
    if name == "dagfm-inner":
        return pooling + F * F * D + L * (F * F * D + N) + F * (L + 1)  # dense (F, F, D) edges
    return pooling + F * F * D + L * (2 * F * F * D + N) + F * (L + 1)  # dagfm-outer


@pytest.mark.parametrize("name", ["crossnet-vector", "crossnet-matrix", "cin", "dagfm-inner",
                                  "dagfm-outer"])
def test_counted_macs_match_hand_counts(name: str, ctr_features: CtrFeatures) -> None:
    f, D, L, H = ctr_features, 4, 3, 5
    kind = name.split("-")[-1]
    model = {"crossnet": lambda: CrossNet(f.cardinalities, f.n_multi, D, L, cross=kind),
             "cin": lambda: CIN(f.cardinalities, f.n_multi, D, L, layer_size=H),
             "dagfm": lambda: DAGFM(f.cardinalities, f.n_multi, D, L, type=kind)}[name.split("-")[0]]()
    F = len(f.cardinalities) + 1
    assert ctr.count_macs(model, f.test) == hand_macs(name, F, D, f.n_multi, L, H)


def test_unknown_teacher_names_are_refused() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["ctr"]["teacher"] = "dcn"
    with pytest.raises(params.ParamsError, match=r"train\.ctr\.teacher.*'crossnet', 'cin'"):
        params.parse(raw)
    with pytest.raises(ValueError, match="unknown ctr model 'dcn'; accepted: cin, crossnet, dagfm"):
        ctr.build_model("dcn", {})


def load_stage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ctr_train", REPO / "stages" / "ctr_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_params(tmp: Path) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["seeds"] = [0]
    raw["runtime"] = {"device": "cpu", "amp": "none", "threads": 1}
    raw["train"]["ctr"].update(epochs=3, patience=2, batch_size=128, depth=2, embed_dim=4)
    raw["distill"]["ctr"]["student"].update(epochs=3, patience=2, batch_size=128, depth=2)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_stages_end_to_end(tmp_path: Path, ctr_files: tuple[Path, Path]) -> None:
    stage, (canonical, prepared) = load_stage(), ctr_files
    common = ["--seed", "0", "--prepared", str(prepared), "--canonical", str(canonical),
              "--params", str(small_params(tmp_path))]
    out = {m: tmp_path / "models" / f"{m}-s0" for m in ("teacher", "distilled", "alone")}
    metric = {m: tmp_path / "metrics" / f"{m}-s0.json" for m in out}
    teacher_pt = out["teacher"] / "model.pt"
    with pytest.raises(SystemExit, match=f"teacher checkpoint {teacher_pt} does not exist"):
        stage.main(["distill", *common, "--teacher", str(teacher_pt), "--out", str(out["distilled"]),
                    "--metrics", str(metric["distilled"])])
    assert not out["distilled"].exists() and not metric["distilled"].exists()
    for role, model in (("teacher", "teacher"), ("distill", "distilled"), ("alone", "alone")):
        extra = ["--teacher", str(teacher_pt)] if role == "distill" else []
        stage.main([role, *common, *extra, "--out", str(out[model]), "--metrics", str(metric[model])])
        assert sorted(p.name for p in out[model].iterdir()) == [
            "history.json", "model.pt", "predictions.parquet", "run.json"]
        record = json.loads(metric[model].read_text())
        assert record["model"] == model and record["track"] == "ctr" and record["seed"] == 0
        assert set(record["metrics"]) == {"valid/auc", "valid/logloss", "test/auc", "test/logloss"}
        assert set(record["cost"]) == {"params", "macs_per_example", "latency_ms", "latency_unit",
                                       "device"}
        predictions = pd.read_parquet(out[model] / "predictions.parquet")
        assert list(predictions.columns) == ["row", "label", "score"]
        labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy()
        assert record["metrics"]["test/auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    history = json.loads((out["distilled"] / "history.json").read_text())
    assert {row["phase"] for row in history} == {"distill", "finetune"}
    run = json.loads((out["distilled"] / "run.json").read_text())
    assert run["teacher"]["checkpoint"] == str(teacher_pt) and run["architecture"] == "dagfm"

    teacher_pt.write_bytes(b"not a checkpoint")  # unreadable teacher: a clear error naming it
    with pytest.raises(CheckpointError, match=f"checkpoint {teacher_pt} could not be loaded"):
        stage.main(["distill", *common, "--teacher", str(teacher_pt), "--out", str(tmp_path / "x"),
                    "--metrics", str(tmp_path / "x.json")])


def test_load_teacher_refuses_a_student_checkpoint(tmp_path: Path, ctr_features: CtrFeatures) -> None:
    from recdistill.train import save_checkpoint
    path = tmp_path / "student.pt"
    save_checkpoint(path, {}, {"role": "distill", "architecture": "dagfm", "config": {}})
    with pytest.raises(ValueError, match=f"checkpoint {path} is not a ctr teacher"):
        ctr.load_teacher(path, ctr_features)
    with pytest.raises(CheckpointError, match=str(tmp_path / "missing.pt")):
        ctr.load_teacher(tmp_path / "missing.pt", ctr_features)


def test_same_seed_same_metrics_bit_for_bit(ctr_features: CtrFeatures, tmp_path: Path) -> None:
    p = params.load(small_params(tmp_path))
    first = ctr.run_ctr("alone", p, features=ctr_features, seed=0)
    second = ctr.run_ctr("alone", p, features=ctr_features, seed=0)
    def strip(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "train/seconds"} for row in history]
    assert first.metrics == second.metrics and strip(first.history) == strip(second.history)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                   second.model.state_dict().values()))
