"""ctr track: metrics against scikit-learn, counted multiply-adds against hand counts, params
and teacher errors, and the three stage roles end to end on a tiny dataset."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import log_loss, roc_auc_score

from recdistill import ctr, params
from recdistill.arm import read_metrics
from recdistill.train.checkpoint import read_checkpoint
from recdistill.publish import write_arm
from recdistill.data.ctr_features import CtrFeatures
from recdistill.models.cin import CIN
from recdistill.models.crossnet import CrossNet
from recdistill.models.dagfm import DAGFM
from recdistill.train import CheckpointError

REPO = Path(__file__).resolve().parents[2]
SmallParams = Callable[..., params.Params]


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


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", ["crossnet-vector", "crossnet-matrix", "cin", "dagfm-inner",
                                  "dagfm-outer"])
def test_cost_counts_hand_macs_and_keeps_the_mode(name: str, training: bool, ctr_features: CtrFeatures,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctr, "LATENCY_ROWS", 64)  # the timed batch; 10k rows take seconds here
    f, D, L, H = ctr_features, 4, 3, 5
    kind = name.split("-")[-1]
    model = {"crossnet": lambda: CrossNet(f.cardinalities, f.n_multi, D, L, cross=kind),
             "cin": lambda: CIN(f.cardinalities, f.n_multi, D, L, layer_size=H),
             "dagfm": lambda: DAGFM(f.cardinalities, f.n_multi, D, L, type=kind)}[name.split("-")[0]]()
    model.train(training)
    cost = ctr.measure_cost(model, f.test)
    F = len(f.cardinalities) + 1
    assert cost.macs_per_example == hand_macs(name, F, D, f.n_multi, L, H)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert (cost.macs_method, cost.device) == ("flop_counter", "cpu")
    assert model.training is training  # measuring restores the mode it found


def test_bad_model_blocks_and_selection_metric_are_params_errors(small_params: SmallParams) -> None:
    p = small_params({"train.ctr.model": {"name": "dcn", "depth": 2}})
    with pytest.raises(params.ParamsError,
                       match=r"train\.ctr\.model\.name = 'dcn' is invalid: expected one of 'crossnet', 'cin'"):
        ctr.architecture("teacher", p)
    p = small_params({"train.ctr.model": {"name": "crossnet", "cross": "matrix", "depth": 2,
                                          "mlp_dims": [], "layer_size": 4}})
    with pytest.raises(params.ParamsError, match=r"unknown key 'train\.ctr\.model\.layer_size'"):
        ctr.architecture("teacher", p)
    p = small_params({"distill.ctr.student.model": {"name": "dagfm", "type": "cross", "depth": 2}})
    with pytest.raises(params.ParamsError, match=r"distill\.ctr\.student\.model\.type = 'cross'"):
        ctr.architecture("alone", p)
    assert ctr.selection(small_params({"evaluate.select.ctr": "logloss"})) == ("valid/logloss", "min")
    with pytest.raises(params.ParamsError, match=r"evaluate\.select\.ctr = 'ndcg@20'.*'auc', 'logloss'"):
        ctr.selection(small_params({"evaluate.select.ctr": "ndcg@20"}))


def test_each_dvc_stage_runs_its_role() -> None:
    """(Its params are checked against what it reads in tests/test_pipeline_e2e.py.)"""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for role, stage in ctr.STAGES.items():
        assert f"ctr_train.py {role} " in stages[stage]["cmd"], stage


def load_stage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ctr_train", REPO / "stages" / "ctr_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_arm(out: Path, metrics: Path, model: str, role: str) -> dict[str, float]:
    """The arm's files are complete and its metrics file agrees with its predictions."""
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "predictions.parquet"]
    [record] = read_metrics(metrics)
    assert (record.track, record.model, record.role, record.seed) == ("ctr", model, role, 0)
    assert set(record.metrics) == {"valid/auc", "valid/logloss", "test/auc", "test/logloss"}
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == ["row", "label", "score"]
    labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy().astype("float64")
    assert record.metrics["test/auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert record.metrics["test/logloss"] == pytest.approx(log_loss(labels, scores), abs=1e-6)
    history = json.loads((out / "history.json").read_text())
    assert [row["step"] for row in history] == list(range(1, record.epochs + 1))
    _, meta = read_checkpoint(out / "model.pt")
    assert meta.selection == {k: v for k, v in record.metrics.items() if k.startswith("valid/")}
    assert meta.best_epoch == record.best_epoch and history[record.best_epoch - 1]["valid/auc"] == (
        record.metrics["valid/auc"])
    return record.metrics


def test_stages_end_to_end(tmp_path: Path, ctr_files: tuple[Path, Path], small_params: SmallParams,
                           params_file: Callable[..., Path]) -> None:
    stage, (canonical, prepared) = load_stage(), ctr_files
    common = ["--seed", "0", "--prepared", str(prepared), "--canonical", str(canonical)]
    small = ["--params", str(params_file(small_params()))]
    out = {m: tmp_path / "models" / f"{m}-s0" for m in ("teacher", "distilled", "alone")}
    metric = {m: tmp_path / "metrics" / f"{m}-s0.json" for m in out}
    teacher_pt = out["teacher"] / "model.pt"

    def student(params_args: list[str], teacher: Path = teacher_pt) -> None:
        stage.main(["student", *common, *params_args, "--teacher", str(teacher),
                    "--out", str(out["distilled"]), "--metrics", str(metric["distilled"])])

    with pytest.raises(CheckpointError, match=rf"checkpoint {teacher_pt} does not exist.*ctr-teacher@0"):
        student(small)
    assert not out["distilled"].exists() and not metric["distilled"].exists()
    stage.main(["teacher", *common, *small, "--out", str(out["teacher"]), "--metrics", str(metric["teacher"])])
    check_arm(out["teacher"], metric["teacher"], "teacher", "teacher")
    # the student takes the teacher's embed_dim (4), not train.ctr.embed_dim
    student(["--params", str(params_file(small_params({"train.ctr.embed_dim": 6}), "wide.yaml"))])
    check_arm(out["distilled"], metric["distilled"], "distilled", "student")
    stage.main(["alone", *common, *small, "--out", str(out["alone"]), "--metrics", str(metric["alone"])])
    check_arm(out["alone"], metric["alone"], "alone", "alone")

    state, meta = read_checkpoint(out["distilled"] / "model.pt")
    assert state["embedding.table.weight"].shape[1] == 4 and meta.extra["embed_dim"] == 4
    assert meta.arch == {"name": "dagfm", "type": "outer", "depth": 2}
    assert meta.extra["teacher"]["checkpoint"] == str(teacher_pt)
    assert meta.extra["teacher"]["arch"]["name"] == "crossnet"
    assert meta.extra["chosen_phase"] in ("distill", "finetune")
    chosen_best = meta.extra["phase_best"][meta.extra["chosen_phase"]]
    assert chosen_best["valid/auc"] == meta.selection["valid/auc"]
    history = json.loads((out["distilled"] / "history.json").read_text())
    phases = [row["phase"] for row in history]
    assert phases == sorted(phases) and set(phases) == {"distill", "finetune"}  # distill rows first

    with pytest.raises(CheckpointError, match=rf"{out['distilled']}/model.pt is a ctr student, not a ctr teacher"):
        student(small, teacher=out["distilled"] / "model.pt")
    teacher_pt.write_bytes(b"not a checkpoint")  # unreadable teacher: a clear error naming it
    with pytest.raises(CheckpointError, match=rf"checkpoint {teacher_pt} could not be loaded.*ctr-teacher@0"):
        student(small)


def test_teacher_trained_on_other_data_is_refused(tmp_path: Path, ctr_features: CtrFeatures,
                                                  small_params: SmallParams) -> None:
    p = small_params({"train.ctr.optim.epochs": 1})
    write_arm(ctr.run_ctr("teacher", p, features=ctr_features, seed=0), tmp_path)
    other = dataclasses.replace(ctr_features, cardinalities=(ctr_features.cardinalities[0] + 1,
                                                             *ctr_features.cardinalities[1:]))
    with pytest.raises(CheckpointError, match="was trained on other data .cardinalities differ"):
        ctr.load_ctr_teacher(tmp_path / "model.pt", other)
    teacher = ctr.load_ctr_teacher(tmp_path / "model.pt", ctr_features)
    assert not teacher.model.training and teacher.meta.extra["embed_dim"] == 4


def test_same_seed_same_metrics_bit_for_bit(ctr_features: CtrFeatures, small_params: SmallParams) -> None:
    p = small_params()
    first = ctr.run_ctr("alone", p, features=ctr_features, seed=0)
    second = ctr.run_ctr("alone", p, features=ctr_features, seed=0)
    assert first.record == second.record and first.history == second.history  # no wall clock in either
    assert first.state.keys() == second.state.keys()
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
