"""evaluate: recomputation from saved predictions, aggregation, the exact report text, the stage.

Every fixture is synthetic and written to a tmp dir through the stages' own schema
(``arm.ArmRecord`` / ``arm.ArmSet``, ``arm.write_metrics``); reported metrics come from
independent references (numpy, scikit-learn, the dense ``recdistill.metrics`` ranking), never
from ``report`` itself.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recdistill import arm, cli, metrics, params, report
from recdistill.io import write_json, write_parquet
from recdistill.latency import latency_table, write_latency
from recdistill.train.loop import history_records

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4
P = params.load(REPO / "params.yaml")
SPECS = report.track_specs(P.evaluate)
SAMPLED = P.evaluate.sampled_label
Scenario = Literal["warm", "ics", "ucs"]
MacsMethod = Literal["flop_counter", "formula"]


# ---------------------------------------------------------------- fixture writers
def _record(track: arm.Track, model: str, role: arm.Role, seed: int, test: dict[str, float], *,
            scenario: Scenario | None = None, params: int = 1000, stopped: arm.Stopped = "early_stopping",
            macs_method: MacsMethod = "flop_counter") -> arm.ArmRecord:
    trained = stopped != "not_trained"
    return arm.ArmRecord(
        track=track, model=model, role=role, seed=seed, scenario=scenario,
        metrics={"valid/x": 0.5, **test},
        cost=arm.Cost(params=params, macs_per_example=params * 2, macs_method=macs_method, device="cpu"),
        epochs=5 if trained else 0, best_epoch=3 if trained else 0, stopped=stopped)


def _name(record: arm.ArmRecord) -> str:
    """``<model>[-<scenario>]-s<seed>``: the metrics file stem and the run folder."""
    scenario = f"-{record.scenario}" if record.scenario else ""
    return f"{record.model}{scenario}-s{record.seed}"


def _write_run(root: Path, record: arm.ArmRecord, predictions: pd.DataFrame | None,
               curve: str | None = None) -> Path:
    """The metrics file, and a run folder with predictions, a stand-in model.pt (bytes unique
    to the run: the report only hashes it, to find its training run) and (with ``curve``) a
    history as ``publish.write_arm`` writes it: every row the same keys, the validation metric
    every second epoch (null in between), ``step`` numbering the rows."""
    arm.write_metrics(root / "metrics" / record.track / f"{_name(record)}.json", record)
    run_dir = root / "models" / record.track / _name(record)
    run_dir.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        write_parquet(run_dir / "predictions.parquet", predictions)
    (run_dir / "model.pt").write_text(f"{record.track}/{_name(record)}")
    if curve:
        rows = [{"epoch": e, "step": e, "train/loss": 1 / e + 0.01 * record.seed,
                 **({curve: 0.5 + 0.05 * e} if e % 2 == 0 else {})} for e in range(1, 7)]
        write_json(run_dir / "history.json", history_records(rows))
    return run_dir


def _coldstart_run(root: Path, model: str, scenario: Scenario, seed: int, noise: float,
                   rng: np.random.Generator) -> Path:
    rating = rng.integers(1, 6, 200)
    pred = np.clip(rating + rng.normal(0, noise, 200), 1, 5)
    frame = pd.DataFrame({"user": np.arange(200), "item": np.arange(200) % 7,
                          "rating": rating.astype(np.int8), "prediction": pred.astype(np.float32)})
    err = frame["prediction"].to_numpy(np.float64) - rating
    test = {"test/rmse": float(np.sqrt(np.mean(err ** 2))), "test/mae": float(np.mean(np.abs(err)))}
    test["valid/rmse"] = test["test/rmse"] + 0.01  # picks the baseline of a gain row
    baseline = model == "bias"
    record = _record("coldstart", model, "baseline" if baseline else "teacher", seed, test,
                     scenario=scenario, stopped="not_trained" if baseline else "early_stopping")
    return _write_run(root, record, frame, None if baseline else "valid/rmse")


def _ctr_run(root: Path, model: str, role: arm.Role, seed: int, signal: float,
             rng: np.random.Generator) -> Path:
    label = rng.integers(0, 2, 400)
    score = 1 / (1 + np.exp(-(signal * (2 * label - 1) + rng.normal(0, 1, 400))))
    frame = pd.DataFrame({"row": np.arange(400), "label": label.astype(np.int8),
                          "score": score.astype(np.float32)})
    s = frame["score"].to_numpy(np.float64)
    test = {"test/auc": float(roc_auc_score(label, s)), "test/logloss": float(log_loss(label, s))}
    return _write_run(root, _record("ctr", model, role, seed, test), frame, "valid/auc")


def _topk_run(root: Path, track: arm.Track, model: str, role: arm.Role, seed: int, test: pd.DataFrame,
              n_items: int, quality: float, rng: np.random.Generator) -> Path:
    """Top-20 lists that put each relevant item in with probability ``quality``; the reported
    metrics come from the dense ``recdistill.metrics`` on the same ranking (seq also reports
    sampled-ranking values, which no predictions can check)."""
    users = np.sort(test["user"].unique())
    scores = rng.random((len(users), n_items))  # (U, I)
    rows = np.searchsorted(users, test["user"].to_numpy())
    scores[rows, test["item"].to_numpy()] += quality * rng.random(len(test))
    dense = torch.as_tensor(scores)
    top = metrics.topk_items(dense, 20).numpy()  # (U, 20)
    frame = pd.DataFrame({"user": np.repeat(users, 20), "rank": np.tile(np.arange(1, 21), len(users)),
                          "item": top.ravel(), "score": np.take_along_axis(scores, top, 1).ravel()})
    relevant = torch.zeros(dense.shape, dtype=torch.bool)
    relevant[rows, test["item"].to_numpy().copy()] = True
    reported = {f"test/{k}": v for k, v in metrics.ranking_metrics(dense, relevant, (10, 20)).items()}
    if track == "seq":
        reported = {k: v for k, v in reported.items() if "recall" not in k}
        reported |= {f"test/{SAMPLED}_{m}@{k}": 0.3 + quality / 10 for m in ("hr", "ndcg") for k in (10, 20)}
    record = _record(track, model, role, seed, reported, params=5000 if role == "teacher" else 1500)
    return _write_run(root, record, frame, f"valid/ndcg@{20 if track == 'cf' else 10}")


TOPK_ARMS: dict[str, tuple[tuple[str, arm.Role, float], ...]] = {
    "cf": (("meta", "teacher", 1.0), ("distilled", "student", 0.8), ("alone", "alone", 0.6)),
    "seq": (("teacher", "teacher", 1.0), ("distilled", "student", 0.8), ("alone", "alone", 0.6)),
}


def write_results(root: Path, seeds: tuple[int, ...] = (0, 1, 2),
                  tracks: tuple[str, ...] = ("coldstart", "ctr", "cf", "seq")) -> None:
    """A complete synthetic result tree: metrics/, models/, data/prepared/{cf,seq}/test.parquet."""
    rng = np.random.default_rng(0)
    cf_test = pd.DataFrame({"user": np.repeat(np.arange(30), 4), "item": rng.integers(0, 80, 120)}
                           ).drop_duplicates()
    seq_test = pd.DataFrame({"user": np.arange(40), "item": rng.integers(0, 80, 40)})
    write_parquet(root / "data/prepared/cf/test.parquet", cf_test)
    write_parquet(root / "data/prepared/seq/test.parquet", seq_test)
    scenarios: tuple[tuple[Scenario, float], ...] = (("warm", 0.0), ("ics", 0.15), ("ucs", 0.1))
    for seed in seeds:
        if "coldstart" in tracks:
            for scenario, extra in scenarios:
                _coldstart_run(root, "agnn", scenario, seed, 0.85 + extra, rng)
                _coldstart_run(root, "bias", scenario, seed, 0.95 + extra, rng)
        if "ctr" in tracks:
            for model, role, signal in (("teacher", "teacher", 1.2), ("distilled", "student", 1.1),
                                        ("alone", "alone", 0.9)):
                _ctr_run(root, model, role, seed, signal, rng)
        for track, test in (("cf", cf_test), ("seq", seq_test)):
            if track in tracks:
                for model, role, q in TOPK_ARMS[track]:
                    _topk_run(root, track, model, role, seed, test, 80, q, rng)  # type: ignore[arg-type]


def _build(root: Path, specs: dict[str, report.TrackSpec] = SPECS, **kw: Any) -> report.Evaluation:
    return report.build(root / "metrics", root / "models", root / "data/prepared", specs=specs,
                        ks=(10, 20), tolerance=TOL, bootstrap=P.evaluate.bootstrap, **kw)


def _stage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("evaluate_stage", REPO / "stages/evaluate.py")
    stage = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(stage)  # type: ignore[union-attr]
    return stage


STAGE_ARGV = ["metrics", "models", "data/prepared", "metrics/summary.json", "reports/summary.md", "plots"]


# ---------------------------------------------------------------- what the report reads from params
def test_track_specs_follow_the_evaluate_params() -> None:
    assert {t: (s.main, s.curve) for t, s in SPECS.items()} == {
        "coldstart": ("test/rmse", "valid/rmse"), "ctr": ("test/auc", "valid/auc"),
        "cf": ("test/ndcg@20", "valid/ndcg@20"), "seq": ("test/ndcg@10", "valid/ndcg@10")}
    assert SPECS["seq"].columns == ("test/hr@10", "test/ndcg@10", "test/hr@20", "test/ndcg@20",
                                    "test/sampled100_hr@10", "test/sampled100_ndcg@10",
                                    "test/sampled100_hr@20", "test/sampled100_ndcg@20")
    ev = P.evaluate.model_copy(update={
        "ks": (5,), "sampled_negatives": 50,
        "select": P.evaluate.select.model_copy(update={"ctr": "logloss", "cf": "hr@5", "seq": "ndcg@5"})})
    specs = report.track_specs(ev)
    assert (specs["ctr"].main, specs["ctr"].curve) == ("test/logloss", "valid/logloss")
    assert specs["cf"].columns == ("test/recall@5", "test/ndcg@5", "test/auc", "test/hr@5")  # main appended
    assert specs["seq"].columns == ("test/hr@5", "test/ndcg@5", "test/sampled50_hr@5", "test/sampled50_ndcg@5")
    assert list(specs) == list(report.TRACK_NAMES) == ["coldstart", "ctr", "cf", "seq"]


@pytest.mark.parametrize("select, base", [("rmse", "bias-ucs"), ("mae", "attribute-residual-ucs")])
def test_coldstart_gain_base_is_the_best_baseline_on_the_selection_metric(
        tmp_path: Path, select: str, base: str) -> None:
    """The baseline a model is compared with is picked on validation (``evaluate.select``),
    never on test: bias is best on valid/rmse, attribute-residual on valid/mae, and
    attribute-residual is better than bias on test."""
    for model, role, valid, test in (("agnn", "teacher", (0.95, 0.75), 1.00),
                                     ("bias", "baseline", (0.96, 0.78), 1.04),
                                     ("attribute-residual", "baseline", (0.97, 0.77), 1.02)):
        record = _record("coldstart", model, role, 0, {"valid/rmse": valid[0], "valid/mae": valid[1],
                                                       "test/rmse": test, "test/mae": test - 0.2},
                         scenario="ucs")
        arm.write_metrics(tmp_path / f"metrics/coldstart/{_name(record)}.json", record)
    ev = P.evaluate.model_copy(update={"select": P.evaluate.select.model_copy(update={"coldstart": select})})
    specs = report.track_specs(ev)
    [gain] = report.gains(_build(tmp_path, specs).tracks["coldstart"], specs["coldstart"])
    assert (gain.model, gain.base) == ("agnn-ucs", base)
    base_rmse = {"bias-ucs": 1.04, "attribute-residual-ucs": 1.02}[base]
    assert gain.values["test/rmse"] == pytest.approx((base_rmse - 1.00) / base_rmse)


# ---------------------------------------------------------------- recomputation
def test_recomputation_matches_independent_references(tmp_path: Path) -> None:
    write_results(tmp_path, seeds=(0,))
    ev = _build(tmp_path)
    checked = {(r.result.track, r.result.model): set(r.checked) for r in ev.runs}
    assert checked[("coldstart", "agnn-ics")] == {"test/rmse", "test/mae"}
    assert checked[("ctr", "alone")] == {"test/auc", "test/logloss"}
    assert checked[("cf", "distilled")] == {f"test/{m}@{k}" for m in ("recall", "ndcg", "hr") for k in (10, 20)}
    assert checked[("seq", "alone")] == {f"test/{m}@{k}" for m in ("ndcg", "hr") for k in (10, 20)}


def test_topk_metrics_by_hand() -> None:
    top = pd.DataFrame({"user": [0, 0, 0, 1, 1, 1], "rank": [1, 2, 3, 1, 2, 3], "item": [4, 1, 2, 3, 0, 9]})
    test = pd.DataFrame({"user": [0, 0, 1, 2], "item": [1, 2, 7, 5]})  # user 2: no list at all
    out = report.topk_metrics(top, test, [2, 3])
    ideal2 = 1 + 1 / np.log2(3)
    torch.testing.assert_close(out["test/recall@2"], (0.5 + 0 + 0) / 3)
    torch.testing.assert_close(out["test/ndcg@2"], (1 / np.log2(3) / ideal2) / 3)
    torch.testing.assert_close(out["test/ndcg@3"], ((1 / np.log2(3) + 0.5) / ideal2) / 3)
    torch.testing.assert_close(out["test/hr@3"], 1 / 3)


@pytest.mark.parametrize("track, model, tamper", [
    ("coldstart", "agnn-warm",
     lambda f: f.assign(prediction=f["prediction"].where(f.index != 3, 5.0 - f["prediction"]))),
    ("ctr", "distilled", lambda f: f.assign(score=f["score"].where(f.index >= 40, 1 - f["score"]))),
    ("cf", "distilled", lambda f: f.assign(item=f["item"].where(f["rank"] != 1, 79 - f["item"]))),
    ("seq", "distilled", lambda f: f.assign(item=f["item"].where(f["rank"] > 2, -1))),
])
def test_tampered_predictions_are_caught(tmp_path: Path, track: str, model: str,
                                         tamper: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    write_results(tmp_path, seeds=(0,), tracks=(track,))
    _build(tmp_path)  # untouched files pass
    path = tmp_path / "models" / track / f"{model}-s0" / "predictions.parquet"
    write_parquet(path, tamper(pd.read_parquet(path)))
    with pytest.raises(report.RecomputeMismatch) as err:
        _build(tmp_path)
    assert err.value.path == path and err.value.metric.startswith("test/")
    assert abs(err.value.reported - err.value.recomputed) > TOL
    assert str(path) in str(err.value) and f"{model}-s0.json" in str(err.value)
    assert f"{err.value.reported:.6f}" in str(err.value) and err.value.metric in str(err.value)


# ---------------------------------------------------------------- robustness
def test_absent_track_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_results(tmp_path, seeds=(0,), tracks=("ctr",))
    with caplog.at_level(logging.WARNING, logger="recdistill.report"):
        ev = _build(tmp_path)
    assert list(ev.tracks) == ["ctr"] and ev.missing == ("coldstart", "cf", "seq")
    assert "skipping the seq track" in caplog.text


ACCEPTED = "best_epoch, cost, epochs, metrics, model, role, scenario, seed, stopped, track"


@pytest.mark.parametrize("damage, error", [
    (lambda r: r["cost"].pop("macs_per_example"),
     "arm.SchemaError: {path}: missing required key 'cost.macs_per_example'"),
    (lambda r: r["metrics"].update({"test/auc": "x"}),
     "arm.SchemaError: {path}: metrics.test/auc = 'x' is invalid: expected a number"),
    (lambda r: r["cost"].update({"params": 1.5}),
     "arm.SchemaError: {path}: cost.params = 1.5 is invalid: expected an integer"),
    (lambda r: r.update({"role": "distilled"}),
     "arm.SchemaError: {path}: role = 'distilled' is invalid: expected one of 'teacher', 'student', "
     "'alone', 'baseline'"),
    (lambda r: r.update({"stopped": "converged"}),
     "arm.SchemaError: {path}: stopped = 'converged' is invalid: expected one of 'early_stopping', "
     "'epoch_cap', 'not_trained'"),
    (lambda r: r.update({"notes": "rerun"}),
     f"arm.SchemaError: {{path}}: unknown key 'notes'; accepted keys here: {ACCEPTED}"),
    (lambda r: r.update({"track": "cf"}),
     "report.specs.ReportError: {path}: track = 'cf', but the file is in the 'ctr' metrics folder"),
    ("{'track': 'ctr'", "arm.SchemaError: {path}: not valid JSON (Expecting property name enclosed "
                        "in double quotes: line 1 column 2 (char 1))"),
])
def test_damaged_metrics_file_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                damage: Callable[[dict[str, Any]], object] | str,
                                                error: str) -> None:
    """The stage, as ``dvc repro`` runs it (``cli.run``), ends with exit 1 and one line naming
    the file and the field; nothing is written."""
    write_results(tmp_path, seeds=(0,))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    path = Path("metrics/ctr/teacher-s0.json")
    if isinstance(damage, str):
        (tmp_path / path).write_text(damage)
    else:
        record = json.loads((tmp_path / path).read_text())
        damage(record)
        (tmp_path / path).write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    stage = _stage()
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: stage.main(STAGE_ARGV))
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["recdistill." + error.format(path=path)]
    assert not (tmp_path / "metrics/summary.json").exists() and not (tmp_path / "reports").exists()


def test_arm_set_file_and_stale_seeds(tmp_path: Path) -> None:
    """Baselines as one ArmSet file per scenario (one predictions file with a model column);
    a seed no longer in params is ignored."""
    rng = np.random.default_rng(1)
    rating = rng.integers(1, 6, 50).astype(np.int8)
    frames = []
    for name, offset in (("global-mean", 0.5), ("bias", 0.25)):
        pred = (rating + offset).astype(np.float32)
        frames.append(pd.DataFrame({"model": name, "user": 0, "item": 0, "rating": rating, "prediction": pred}))
    for seed in (0, 7):
        arms = {name: _record("coldstart", name, "baseline", seed, {"test/rmse": offset, "test/mae": offset},
                              scenario="ics", stopped="not_trained", macs_method="formula")
                for name, offset in (("global-mean", 0.5), ("bias", 0.25))}
        arm.write_metrics(tmp_path / f"metrics/coldstart/baselines-ics-s{seed}.json", arm.ArmSet(arms=arms))
        write_parquet(tmp_path / f"models/coldstart/baselines-ics-s{seed}/predictions.parquet",
                      pd.concat(frames))
    ev = _build(tmp_path, seeds=(0, 1))
    assert sorted((r.result.model, r.result.seed, r.checked) for r in ev.runs) == [
        ("bias-ics", 0, ("test/rmse", "test/mae")), ("global-mean-ics", 0, ("test/rmse", "test/mae"))]
    assert [(m.model, m.name, m.stopped) for m in ev.tracks["coldstart"]] == [
        ("bias-ics", "bias", ("not_trained",)), ("global-mean-ics", "global-mean", ("not_trained",))]


def test_history_keeps_numbers_and_plots_steps(tmp_path: Path) -> None:
    """history.json as ``publish.write_arm`` writes it: null where an epoch has no validation,
    ``step`` numbering on through ctr's phases (whose epochs restart at 1)."""
    rows = [{"phase": ph, "epoch": e, "step": e + 3 * i, "train/loss": 1.0 / (e + 3 * i),
             **({"valid/auc": 0.7 + 0.01 * e} if e != 2 else {})}
            for i, ph in enumerate(("distill", "finetune")) for e in (1, 2, 3)]
    write_json(tmp_path / "history.json", history_records(rows))
    history = report.read_history(tmp_path / "history.json")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    assert history[1] == {"epoch": 2.0, "train/loss": 0.5}  # phase (a string) and null dropped
    run = report.Run(report.parse_metrics_file(_ctr_file(tmp_path), "ctr")[0], (), history, None)
    figure = report.learning_curves("ctr", [run], SPECS["ctr"])
    valid = figure.axes[1]
    assert valid.get_ylabel() == "valid/auc"  # evaluate.select.ctr
    [line] = valid.get_lines()
    assert list(line.get_xdata()) == [1, 3, 4, 6]  # type: ignore[arg-type]
    write_json(tmp_path / "bad.json", [{"epoch": 1}, 3])
    with pytest.raises(report.ReportError, match="bad.json: row 1"):
        report.read_history(tmp_path / "bad.json")


def _ctr_file(root: Path) -> Path:
    path = root / "metrics/ctr/distilled-s0.json"
    arm.write_metrics(path, _record("ctr", "distilled", "student", 0, {"test/auc": 0.8}))
    return path


# ---------------------------------------------------------------- the report text
def test_report_markdown_exact(tmp_path: Path) -> None:
    for seed, delta in ((0, 0.0), (1, 0.02)):
        for model, role, auc, ll, params_ in (
                ("teacher", "teacher", 0.80, 0.50, 10000), ("distilled", "student", 0.79, 0.52, 2500),
                ("alone", "alone", 0.77, 0.56, 2500)):
            record = _record("ctr", model, role, seed, {"test/auc": auc + delta, "test/logloss": ll + delta},
                             params=params_,
                             stopped="epoch_cap" if (model, seed) == ("alone", 1) else "early_stopping")
            arm.write_metrics(tmp_path / f"metrics/ctr/{_name(record)}.json", record)
    agnn = _record("coldstart", "agnn", "teacher", 0, {"test/rmse": 0.9, "test/mae": 0.7}, scenario="warm")
    arm.write_metrics(tmp_path / "metrics/coldstart/agnn-warm-s0.json", agnn)
    baselines = {model: _record("coldstart", model, "baseline", 0,
                                {"valid/rmse": rmse, "test/rmse": rmse, "test/mae": rmse - 0.2},
                                scenario="warm", params=10, stopped="not_trained", macs_method="formula")
                 for model, rmse in (("bias", 0.95), ("global-mean", 1.1))}
    arm.write_metrics(tmp_path / "metrics/coldstart/baselines-warm.json", arm.ArmSet(arms=baselines))
    # per round: the distilled model at 1/4, 1/4 and 1/2 of the teacher's time, alone at 1/4
    times = {"teacher": [4.0, 4.0, 4.0], "distilled": [1.0, 1.0, 2.0], "alone": [1.0, 1.0, 1.0]}
    write_latency(tmp_path / "metrics/latency/ctr.json", latency_table(
        "ctr", times, teacher="teacher", unit="per 10k rows", device=torch.device("cpu")))
    ev = _build(tmp_path)
    text = report.render_markdown(
        ev, specs=SPECS, provenance=report.Provenance("c0ffee", "p1234", "d5678"), tolerance=TOL,
        figures={"quality cost": "../plots/quality_cost.png"})
    expected = """\
# recdistill: what the transfer bought, and at what cost

- commit: `c0ffee`
- params hash (evaluate and the training runs): `p1234`
- data manifest: `d5678`
- models trained at: —

Test metrics are the mean ± sample std over seeds. A gain row is the relative improvement of the first model over the second (positive = better). ×teacher is a cost as a fraction of the teacher's. Latency: every model of a track timed side by side in one process (first seed's checkpoints; the median over rounds, the ratio the median of per-round ratios with their interquartile range); params and MACs are counted. stopped: early (every seed stopped early), cap n/N (n seeds stopped at their epoch cap: not converged), — (not trained by gradient steps). Under each table, the absolute gain in the track's main metric with a paired-bootstrap interval over the test users or rows: the trained models held fixed, it covers test-set sampling, not the variance between training seeds, which the per-seed differences show.

## coldstart

Main metric `test/rmse` (lower is better).

| scenario | model | role | seeds | stopped | test/rmse | test/mae | params | params ×teacher | MACs/example | latency ms | latency ×teacher (IQR) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| warm | agnn-warm | teacher | 1 | early | 0.9000 | 0.7000 | 1,000 | 1.00× | 2,000 | — | — |
| warm | bias-warm | baseline | 1 | — | 0.9500 | 0.7500 | 10 | 0.01× | 20† | — | — |
| warm | global-mean-warm | baseline | 1 | — | 1.1000 | 0.9000 | 10 | 0.01× | 20† | — | — |
| warm | gain: agnn-warm vs bias-warm |  |  |  | +5.26% | +6.67% |  |  |  |  |  |

Gain in `test/rmse` (absolute, positive = better; the mean over seeds) with its paired-bootstrap interval over the test rows.

| comparison | gain | CI | CI excludes 0 | per seed |
| --- | --- | --- | --- | --- |
| agnn-warm vs bias-warm | — | — | — | no test/rmse per test unit in the saved predictions of agnn-warm-s0, bias-warm-s0 |

† MACs from a documented formula: the FLOP counter cannot see the work (sparse products, lookups).

Recomputed from the saved test predictions (within 0.0001): 0 of 3 runs.
Not recomputed (no predictions): agnn-warm-s0, bias-warm-s0, global-mean-warm-s0.

## ctr

Main metric `test/auc` (higher is better).

| model | role | seeds | stopped | test/auc | test/logloss | params | params ×teacher | MACs/example | latency ms (per 10k rows) | latency ×teacher (IQR) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| teacher | teacher | 2 | early | 0.8100 ± 0.0141 | 0.5100 ± 0.0141 | 10,000 | 1.00× | 20,000 | 4.00 | 1.00× (1.00–1.00) |
| distilled | student | 2 | early | 0.8000 ± 0.0141 | 0.5300 ± 0.0141 | 2,500 | 0.25× | 5,000 | 1.00 | 0.25× (0.25–0.38) |
| alone | alone | 2 | cap 1/2 | 0.7800 ± 0.0141 | 0.5700 ± 0.0141 | 2,500 | 0.25× | 5,000 | 1.00 | 0.25× (0.25–0.25) |
| gain: distilled vs alone |  |  |  | +2.56% | +7.02% |  |  |  |  |  |

Gain in `test/auc` (absolute, positive = better; the mean over seeds) with its paired-bootstrap interval over the test rows.

| comparison | gain | CI | CI excludes 0 | per seed |
| --- | --- | --- | --- | --- |
| distilled vs alone | — | — | — | no test/auc per test unit in the saved predictions of distilled-s0, alone-s0, distilled-s1, alone-s1 |
| teacher vs alone | — | — | — | no test/auc per test unit in the saved predictions of teacher-s0, alone-s0, teacher-s1, alone-s1 |

Not converged (stopped at the epoch cap, not by early stopping): alone-s1.

Recomputed from the saved test predictions (within 0.0001): 0 of 6 runs.
Not recomputed (no predictions): alone-s0, alone-s1, distilled-s0, distilled-s1, teacher-s0, teacher-s1.

## cf

No results yet.

## seq

No results yet.

## Figures

- [quality cost](../plots/quality_cost.png)
"""
    assert text == expected


def test_no_results_at_all_is_an_error_naming_the_folder(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    with pytest.raises(report.ReportError, match=rf"^{re.escape(str(tmp_path / 'metrics'))}: no metrics file"):
        _build(tmp_path)


def test_summary_json_mean_std(tmp_path: Path) -> None:
    write_results(tmp_path, tracks=("ctr",))
    summary = report.summary_json(_build(tmp_path), SPECS)
    aucs = [json.loads((tmp_path / f"metrics/ctr/teacher-s{s}.json").read_text())["metrics"]["test/auc"]
            for s in (0, 1, 2)]
    entry = summary["ctr"]["teacher"]
    torch.testing.assert_close(entry["test/auc"]["mean"], float(np.mean(aucs)))
    torch.testing.assert_close(entry["test/auc"]["std"], float(np.std(aucs, ddof=1)))
    assert entry["seeds"] == 3 and entry["params"] == 1000 and entry["recomputed_runs"] == 3
    assert entry["stopped"] == {"early_stopping": 3} and entry["macs_method"] == "flop_counter"
    assert "valid/x" not in entry
    distilled, alone = summary["ctr"]["distilled"], summary["ctr"]["alone"]
    torch.testing.assert_close(summary["ctr"]["gain: distilled vs alone"]["test/logloss"],
                               (alone["test/logloss"]["mean"] - distilled["test/logloss"]["mean"])
                               / alone["test/logloss"]["mean"])


# ---------------------------------------------------------------- the bootstrapped gains
def _reported(root: Path, track: str, model: str, seed: int, metric: str) -> float:
    return json.loads((root / f"metrics/{track}/{model}-s{seed}.json").read_text())["metrics"][metric]


def test_every_comparison_gets_a_paired_interval(tmp_path: Path) -> None:
    """Each gain row, and teacher vs alone, of every track: the per-seed differences are the
    differences of the reported test metrics (scikit-learn, the dense ranking; positive =
    better), with the interval in summary.json and the report."""
    write_results(tmp_path)
    ev = _build(tmp_path)
    summary = report.summary_json(ev, SPECS)
    text = report.render_markdown(ev, specs=SPECS, provenance=report.Provenance("c", "p", "d"),
                                  figures={}, tolerance=TOL)
    expected = {("coldstart", "agnn-warm", "bias-warm"), ("coldstart", "agnn-ics", "bias-ics"),
                ("coldstart", "agnn-ucs", "bias-ucs")} | {
        (track, model, "alone") for track, teacher in (("ctr", "teacher"), ("cf", "meta"), ("seq", "teacher"))
        for model in ("distilled", teacher)}
    found = {(track, *key.removeprefix("ci: ").split(" vs ")) for track, entries in summary.items()
             for key in entries if key.startswith("ci: ")}
    assert found == expected
    units = {"coldstart": 200, "ctr": 400, "cf": 30, "seq": 40}  # test rows, or test users
    for track, model, base in sorted(expected):
        ci = summary[track][f"ci: {model} vs {base}"]
        main = SPECS[track].main
        sign = 1 if report.higher_is_better(main) else -1
        for seed in (0, 1, 2):
            a = _reported(tmp_path, track, model, seed, main)
            torch.testing.assert_close(ci["per_seed"][str(seed)], sign * (a - _reported(tmp_path, track, base, seed, main)))
        torch.testing.assert_close(ci["mean"], float(np.mean(list(ci["per_seed"].values()))))
        assert ci["metric"] == main and ci["low"] < ci["high"] and ci["level"] == P.evaluate.bootstrap.level
        assert (ci["resamples"], ci["units"]) == (P.evaluate.bootstrap.resamples, units[track])
        assert ci["excludes_zero"] == (ci["low"] > 0 or ci["high"] < 0)
        per_seed = ", ".join(f"s{s} {d:+.4f}" for s, d in ci["per_seed"].items())
        row = (f"| {model} vs {base} | {ci['mean']:+.4f} | [{ci['low']:+.4f}, "
               f"{ci['high']:+.4f}] | {'yes' if ci['excludes_zero'] else 'no'} | {per_seed} |")
        assert row in text
    assert summary["cf"]["ci: distilled vs alone"]["excludes_zero"]  # quality 0.8 vs 0.6 over 30 users
    assert ("Gain in `test/ndcg@20` (absolute, positive = better; the mean over seeds) with its 95% "
            "paired-bootstrap interval over the test users: 2,000 resamples, each the same for both "
            "models and every seed.") in text


def test_a_baseline_run_pairs_with_every_seed_and_gaps_are_said(tmp_path: Path) -> None:
    """A baseline with one run (not trained: the same at every seed) is paired with each seed
    of the model; a comparison without per-unit predictions has a note instead."""
    write_results(tmp_path, seeds=(0, 1), tracks=("coldstart", "cf"))
    for scenario in ("warm", "ics", "ucs"):
        (tmp_path / f"metrics/coldstart/bias-{scenario}-s1.json").unlink()
    (tmp_path / "models/cf/alone-s1/predictions.parquet").unlink()
    summary = report.summary_json(_build(tmp_path), SPECS)
    ci = summary["coldstart"]["ci: agnn-ics vs bias-ics"]
    bias = _reported(tmp_path, "coldstart", "bias-ics", 0, "test/rmse")
    for seed in (0, 1):
        torch.testing.assert_close(ci["per_seed"][str(seed)],
                                   bias - _reported(tmp_path, "coldstart", "agnn-ics", seed, "test/rmse"))
    assert summary["cf"]["ci: distilled vs alone"] == {
        "metric": "test/ndcg@20", "note": "no test/ndcg@20 per test unit in the saved predictions of alone-s1"}
    ev = P.evaluate.model_copy(update={"select": P.evaluate.select.model_copy(update={"cf": "auc"})})
    specs = report.track_specs(ev)  # cf's full-ranking AUC: not in the top-k lists
    summary = report.summary_json(_build(tmp_path, specs), specs)
    assert summary["cf"]["ci: meta vs alone"]["note"].startswith("no test/auc per test unit in the saved "
                                                               "predictions of meta-s0, alone-s0")


# ---------------------------------------------------------------- the stage, end to end
def test_stage_writes_outputs_and_links_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from recdistill import tracking

    write_results(tmp_path, seeds=(0, 1), tracks=("coldstart", "ctr", "seq"))  # 2 seeds: std > 0
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())  # the params the run logs
    monkeypatch.chdir(tmp_path)
    trained = {}  # "ctr.distilled-s1" -> the run that recorded that checkpoint last
    for path in sorted((tmp_path / "models").rglob("model.pt")):
        track, folder = path.parent.parent.name, path.parent.name
        for _ in range(2 if folder == "distilled-s1" else 1):  # a rerun of the same weights: the later links
            with tracking.stage_run("train", folder, track=track, role="teacher", params={}) as run:
                run.record_checkpoint(path)
        trained[f"{track}.{folder}"] = run.run_id
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *STAGE_ARGV])
    _stage().main()
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert sorted(summary) == ["coldstart", "ctr", "seq"]
    assert json.loads((tmp_path / "metrics/ctr.json").read_text()) == summary["ctr"]
    assert json.loads((tmp_path / "metrics/cf.json").read_text()) == {}
    for name in report.FIGURES:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "reports/summary.md").read_text()
    assert "## cf\n\nNo results yet." in text and "(../plots/curves_ctr.png)" in text
    sampled = [json.loads((tmp_path / f"metrics/seq/teacher-s{s}.json").read_text())["metrics"]
               [f"test/{SAMPLED}_hr@10"] for s in (0, 1)]
    assert summary["seq"]["teacher"][f"test/{SAMPLED}_hr@10"]["mean"] == pytest.approx(np.mean(sampled))
    assert f"| test/{SAMPLED}_hr@10 |" in text
    client = MlflowClient(tracking.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("recdistill").experiment_id],
                              filter_string="tags.stage = 'evaluate'", order_by=["attributes.start_time DESC"])
    tags = runs[0].data.tags
    assert tags["link.ctr.distilled.s1"] == trained["ctr.distilled-s1"]
    assert tags["tracks.missing"] == "cf" and trained["seq.alone-s0"][:8] in tags["mlflow.note.content"]
    assert f"`{tags['params.report.hash']}`" in text
    assert runs[0].data.params["evaluate.select.seq"] == "ndcg@10"
    assert runs[0].data.metrics["seq.distilled.test/ndcg_at_10.mean"] == summary["seq"]["distilled"]["test/ndcg@10"]["mean"]
    assert runs[0].data.metrics["ctr.gain: distilled vs alone.test/auc"] == pytest.approx(
        summary["ctr"]["gain: distilled vs alone"]["test/auc"])
