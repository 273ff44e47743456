"""evaluate: recomputation from saved predictions, aggregation, the exact report text, the stage.

Every fixture is synthetic and written to a tmp dir; reported metrics come from independent
references (numpy, scikit-learn, the dense ``recdistill.metrics`` ranking), never from
``report`` itself.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recdistill import metrics, report
from recdistill.io import write_json, write_parquet

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4


# ---------------------------------------------------------------- fixture writers
def _record(track: str, model: str, role: str, seed: int, test: dict[str, float], *,
            params: int = 1000, latency: float = 1.0, unit: str = "all users") -> dict:
    return {"track": track, "model": model, "role": role, "seed": seed,
            "metrics": {"valid/x": 0.5, **test},
            "cost": {"params": params, "macs_per_example": params * 2, "latency_ms": latency,
                     "latency_unit": unit, "device": "cpu"},
            "epochs": 5, "best_epoch": 3, "seconds_per_epoch": 0.1}


def _write_run(root: Path, track: str, model: str, seed: int, record: dict,
               predictions: pd.DataFrame | None, curve: str | None = None) -> Path:
    write_json(root / "metrics" / track / f"{model}-s{seed}.json", record)
    run_dir = root / "models" / track / f"{model}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        write_parquet(run_dir / "predictions.parquet", predictions)
    write_json(run_dir / "run.json", {"run_id": f"run-{track}-{model}-{seed}", "experiment_id": "1",
                                      "run_name": f"{track}-{model}@{seed}", "git.commit": "abc123"})
    if curve:
        write_json(run_dir / "history.json",
                   [{"epoch": e, "train/loss": 1 / e + 0.01 * seed, curve: 0.5 + 0.05 * e}
                    for e in range(1, 6)])
    return run_dir


def _coldstart_run(root: Path, model: str, seed: int, noise: float, rng: np.random.Generator
                   ) -> Path:
    rating = rng.integers(1, 6, 200)
    pred = np.clip(rating + rng.normal(0, noise, 200), 1, 5)
    frame = pd.DataFrame({"user": np.arange(200), "item": np.arange(200) % 7,
                          "rating": rating.astype(np.int8), "prediction": pred.astype(np.float32)})
    err = frame["prediction"].to_numpy(np.float64) - rating
    test = {"test/rmse": float(np.sqrt(np.mean(err ** 2))), "test/mae": float(np.mean(np.abs(err)))}
    role = "baseline" if model.startswith("bias") else "teacher"
    return _write_run(root, "coldstart", model, seed, _record("coldstart", model, role, seed, test),
                      frame, "valid/rmse" if role != "baseline" else None)


def _ctr_run(root: Path, model: str, role: str, seed: int, signal: float,
             rng: np.random.Generator) -> Path:
    label = rng.integers(0, 2, 400)
    score = 1 / (1 + np.exp(-(signal * (2 * label - 1) + rng.normal(0, 1, 400))))
    frame = pd.DataFrame({"row": np.arange(400), "label": label.astype(np.int8),
                          "score": score.astype(np.float32)})
    s = frame["score"].to_numpy(np.float64)
    test = {"test/auc": float(roc_auc_score(label, s)), "test/logloss": float(log_loss(label, s))}
    return _write_run(root, "ctr", model, seed, _record("ctr", model, role, seed, test), frame,
                      "valid/auc")


def _topk_run(root: Path, track: str, model: str, role: str, seed: int, test: pd.DataFrame,
              n_items: int, quality: float, rng: np.random.Generator) -> Path:
    """Top-20 lists that put each relevant item in with probability ``quality``; the reported
    metrics come from the dense ``recdistill.metrics`` on the same ranking."""
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
    return _write_run(root, track, model, seed, _record(track, model, role, seed, reported,
                                                        params=5000 if role == "teacher" else 1500),
                      frame, f"valid/ndcg@{20 if track == 'cf' else 10}")


def write_results(root: Path, seeds: tuple[int, ...] = (0, 1, 2),
                  tracks: tuple[str, ...] = ("coldstart", "ctr", "cf", "seq")) -> None:
    """A complete synthetic result tree: metrics/, models/, data/prepared/{cf,seq}/test.parquet."""
    rng = np.random.default_rng(0)
    cf_test = pd.DataFrame({"user": np.repeat(np.arange(30), 4), "item": rng.integers(0, 80, 120)}
                           ).drop_duplicates()
    seq_test = pd.DataFrame({"user": np.arange(40), "item": rng.integers(0, 80, 40)})
    write_parquet(root / "data/prepared/cf/test.parquet", cf_test)
    write_parquet(root / "data/prepared/seq/test.parquet", seq_test)
    for seed in seeds:
        if "coldstart" in tracks:
            for scenario, extra in (("warm", 0.0), ("ics", 0.15), ("ucs", 0.1)):
                _coldstart_run(root, f"agnn-{scenario}", seed, 0.85 + extra, rng)
                _coldstart_run(root, f"bias-{scenario}", seed, 0.95 + extra, rng)
        if "ctr" in tracks:
            for model, role, signal in (("crossnet", "teacher", 1.2), ("dagfm-distilled", "student", 1.1),
                                        ("dagfm-alone", "alone", 0.9)):
                _ctr_run(root, model, role, seed, signal, rng)
        for track, test in (("cf", cf_test), ("seq", seq_test)):
            if track in tracks:
                for model, role, q in (("teacher", "teacher", 1.0), ("distilled", "student", 0.8),
                                       ("alone", "alone", 0.6)):
                    _topk_run(root, track, model, role, seed, test, 80, q, rng)


def _build(root: Path, **kw: object) -> report.Evaluation:
    return report.build(root / "metrics", root / "models", root / "data/prepared", ks=(10, 20),
                        tolerance=TOL, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- recomputation
def test_recomputation_matches_independent_references(tmp_path: Path) -> None:
    write_results(tmp_path, seeds=(0,))
    ev = _build(tmp_path)
    checked = {(r.result.track, r.result.model): set(r.checked) for r in ev.runs}
    assert checked[("coldstart", "agnn-ics")] == {"test/rmse", "test/mae"}
    assert checked[("ctr", "dagfm-alone")] == {"test/auc", "test/logloss"}
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


@pytest.mark.parametrize("track, tamper", [
    ("coldstart", lambda f: f.assign(prediction=f["prediction"].where(f.index != 3, 5.0 - f["prediction"]))),
    ("ctr", lambda f: f.assign(score=f["score"].where(f.index >= 40, 1 - f["score"]))),
    ("cf", lambda f: f.assign(item=f["item"].where(f["rank"] != 1, 79 - f["item"]))),
    ("seq", lambda f: f.assign(item=f["item"].where(f["rank"] > 2, -1))),
])
def test_tampered_predictions_are_caught(tmp_path: Path, track: str,
                                         tamper: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    write_results(tmp_path, seeds=(0,), tracks=(track,))
    _build(tmp_path)  # untouched files pass
    model = {"coldstart": "agnn-warm", "ctr": "dagfm-distilled", "cf": "distilled", "seq": "distilled"}[track]
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


@pytest.mark.parametrize("edit, key", [
    (lambda r: r.pop("role"), "'role'"),
    (lambda r: r["metrics"].update({"test/auc": "high"}), "'metrics.test/auc'"),
    (lambda r: r["cost"].update({"params": 1.5}), "'cost.params'"),
    (lambda r: r.update({"role": "mentor"}), "'role'"),
    (lambda r: r.update({"track": "cf"}), "'track'"),
])
def test_malformed_metrics_file_names_file_and_key(tmp_path: Path, edit: Callable[[dict], object],
                                                   key: str) -> None:
    write_results(tmp_path, seeds=(0,), tracks=("ctr",))
    path = tmp_path / "metrics/ctr/crossnet-s0.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(report.ReportError, match=key) as err:
        _build(tmp_path)
    assert str(path) in str(err.value)


def test_multi_model_file_and_stale_seeds(tmp_path: Path) -> None:
    """Baselines as one file per scenario (``models`` mapping, one predictions file with a
    model column); a seed no longer in params is ignored."""
    rng = np.random.default_rng(1)
    rating = rng.integers(1, 6, 50).astype(np.int8)
    frames, models = [], {}
    for name, offset in (("global-mean", 0.5), ("bias", 0.25)):
        pred = (rating + offset).astype(np.float32)
        frames.append(pd.DataFrame({"model": name, "user": 0, "item": 0, "rating": rating, "prediction": pred}))
        models[name] = {"role": "baseline", "metrics": {"test/rmse": offset, "test/mae": offset}}
    for seed in (0, 7):
        write_json(tmp_path / f"metrics/coldstart/baselines-ics-s{seed}.json",
                   {"track": "coldstart", "seed": seed, "scenario": "ics", "models": models})
        write_parquet(tmp_path / f"models/coldstart/baselines-ics-s{seed}/predictions.parquet",
                      pd.concat(frames))
    ev = _build(tmp_path, seeds=(0, 1))
    assert sorted((r.result.model, r.result.seed, r.checked) for r in ev.runs) == [
        ("bias-ics", 0, ("test/rmse", "test/mae")), ("global-mean-ics", 0, ("test/rmse", "test/mae"))]
    assert [m.model for m in ev.tracks["coldstart"]] == ["bias-ics", "global-mean-ics"]


def test_history_phases_number_epochs_on(tmp_path: Path) -> None:
    """ctr's distill + finetune rows restart at epoch 1 within each phase."""
    rows = [{"phase": ph, "epoch": e, "valid/auc": 0.7} for ph in ("distill", "finetune") for e in (1, 2, 3)]
    write_json(tmp_path / "tagged.json", rows)
    write_json(tmp_path / "nested.json", {"distill": rows[:3], "finetune": rows[3:]})
    for name in ("tagged.json", "nested.json"):
        assert [r["epoch"] for r in report.read_history(tmp_path / name)] == [1, 2, 3, 4, 5, 6]
    write_json(tmp_path / "bad.json", [{"epoch": 1}, 3])
    with pytest.raises(report.ReportError, match="bad.json: row 1"):
        report.read_history(tmp_path / "bad.json")


# ---------------------------------------------------------------- the report text
def test_report_markdown_exact(tmp_path: Path) -> None:
    for seed, delta in ((0, 0.0), (1, 0.02)):
        for model, role, auc, ll, params, latency in (
                ("crossnet", "teacher", 0.80, 0.50, 10000, 4.0), ("dagfm-kd", "student", 0.79, 0.52, 2500, 1.0),
                ("dagfm-alone", "alone", 0.77, 0.56, 2500, 1.0)):
            write_json(tmp_path / f"metrics/ctr/{model}-s{seed}.json", _record(
                "ctr", model, role, seed, {"test/auc": auc + delta, "test/logloss": ll + delta},
                params=params, latency=latency, unit="per 10k rows"))
    write_json(tmp_path / "metrics/coldstart/agnn-warm-s0.json",
               _record("coldstart", "agnn-warm", "teacher", 0, {"test/rmse": 0.9, "test/mae": 0.7}))
    for model, rmse in (("bias-warm", 0.95), ("global-mean-warm", 1.1)):
        write_json(tmp_path / f"metrics/coldstart/{model}-s0.json", _record(
            "coldstart", model, "baseline", 0,
            {"valid/rmse": rmse, "test/rmse": rmse, "test/mae": rmse - 0.2}, params=10))
    ev = _build(tmp_path)
    text = report.render_markdown(
        ev, provenance=report.Provenance("c0ffee", "p1234", "d5678"), tolerance=TOL,
        figures={"quality cost": "../plots/quality_cost.png"})
    expected = """\
# recdistill: what the transfer bought, and at what cost

- commit: `c0ffee`
- params hash: `p1234`
- data manifest: `d5678`
- models trained at: —

Test metrics are the mean ± sample std over seeds. A gain row is the relative improvement of the first model over the second (positive = better). ×teacher is a cost as a fraction of the teacher's.

## coldstart

Main metric `test/rmse` (lower is better).

| scenario | model | role | seeds | test/rmse | test/mae | params | params ×teacher | MACs/example | latency ms (all users) | latency ×teacher |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| warm | agnn-warm | teacher | 1 | 0.9000 | 0.7000 | 1,000 | 1.00× | 2,000 | 1.00 | 1.00× |
| warm | bias-warm | baseline | 1 | 0.9500 | 0.7500 | 10 | 0.01× | 20 | 1.00 | 1.00× |
| warm | global-mean-warm | baseline | 1 | 1.1000 | 0.9000 | 10 | 0.01× | 20 | 1.00 | 1.00× |
| warm | gain: agnn-warm vs bias-warm |  |  | +5.26% | +6.67% |  |  |  |  |  |

Recomputed from the saved test predictions (within 0.0001): 0 of 3 runs.
Not recomputed (no predictions): agnn-warm-s0, bias-warm-s0, global-mean-warm-s0.

## ctr

Main metric `test/auc` (higher is better).

| model | role | seeds | test/auc | test/logloss | params | params ×teacher | MACs/example | latency ms (per 10k rows) | latency ×teacher |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| crossnet | teacher | 2 | 0.8100 ± 0.0141 | 0.5100 ± 0.0141 | 10,000 | 1.00× | 20,000 | 4.00 | 1.00× |
| dagfm-kd | student | 2 | 0.8000 ± 0.0141 | 0.5300 ± 0.0141 | 2,500 | 0.25× | 5,000 | 1.00 | 0.25× |
| dagfm-alone | alone | 2 | 0.7800 ± 0.0141 | 0.5700 ± 0.0141 | 2,500 | 0.25× | 5,000 | 1.00 | 0.25× |
| gain: dagfm-kd vs dagfm-alone |  |  | +2.56% | +7.02% |  |  |  |  |  |

Recomputed from the saved test predictions (within 0.0001): 0 of 6 runs.
Not recomputed (no predictions): crossnet-s0, crossnet-s1, dagfm-alone-s0, dagfm-alone-s1, dagfm-kd-s0, dagfm-kd-s1.

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


def test_coldstart_gain_base_is_the_best_baseline_on_validation(tmp_path: Path) -> None:
    """The baseline a model is compared with is picked on validation, never on test: here
    bias is better on validation and attribute-residual on test."""
    for model, role, valid, test in (("agnn-ucs", "teacher", 0.95, 1.00),
                                     ("bias-ucs", "baseline", 0.96, 1.04),
                                     ("attribute-residual-ucs", "baseline", 0.97, 1.02)):
        write_json(tmp_path / f"metrics/coldstart/{model}-s0.json", _record(
            "coldstart", model, role, 0, {"valid/rmse": valid, "test/rmse": test, "test/mae": test}))
    models = _build(tmp_path).tracks["coldstart"]
    [gain] = report.gains(models, report.TRACKS["coldstart"])
    assert (gain.model, gain.base) == ("agnn-ucs", "bias-ucs")
    assert gain.values["test/rmse"] == pytest.approx((1.04 - 1.00) / 1.04)


def test_summary_json_mean_std(tmp_path: Path) -> None:
    write_results(tmp_path, tracks=("ctr",))
    summary = report.summary_json(_build(tmp_path))
    aucs = [json.loads((tmp_path / f"metrics/ctr/crossnet-s{s}.json").read_text())["metrics"]["test/auc"]
            for s in (0, 1, 2)]
    entry = summary["ctr"]["crossnet"]
    torch.testing.assert_close(entry["test/auc"]["mean"], float(np.mean(aucs)))
    torch.testing.assert_close(entry["test/auc"]["std"], float(np.std(aucs, ddof=1)))
    assert entry["seeds"] == 3 and entry["params"] == 1000 and entry["recomputed_runs"] == 3
    assert "valid/x" not in entry
    distilled, alone = summary["ctr"]["dagfm-distilled"], summary["ctr"]["dagfm-alone"]
    torch.testing.assert_close(summary["ctr"]["gain: dagfm-distilled vs dagfm-alone"]["test/logloss"],
                               (alone["test/logloss"]["mean"] - distilled["test/logloss"]["mean"])
                               / alone["test/logloss"]["mean"])


# ---------------------------------------------------------------- the stage, end to end
def test_stage_writes_outputs_and_links_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from recdistill import tracking

    write_results(tmp_path, seeds=(0, 1), tracks=("coldstart", "ctr", "cf"))  # 2 seeds: std > 0
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    spec = importlib.util.spec_from_file_location("evaluate_stage", REPO / "stages/evaluate.py")
    stage = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(stage)  # type: ignore[union-attr]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "metrics", "models", "data/prepared",
                                      "metrics/summary.json", "reports/summary.md", "plots"])
    stage.main()
    summary = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert sorted(summary) == ["cf", "coldstart", "ctr"]
    assert json.loads((tmp_path / "metrics/ctr.json").read_text()) == summary["ctr"]
    for name in report.FIGURES:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "reports/summary.md").read_text()
    assert "## seq\n\nNo results yet." in text and "(../plots/curves_ctr.png)" in text
    runs = MlflowClient(tracking.tracking_uri()).search_runs(
        [MlflowClient(tracking.tracking_uri()).get_experiment_by_name("recdistill").experiment_id],
        filter_string="tags.stage = 'evaluate'")
    tags = runs[0].data.tags
    assert tags["link.ctr.dagfm-distilled.s1"] == "run-ctr-dagfm-distilled-1"
    assert tags["tracks.missing"] == "seq" and "run-cf-alone-0" in tags["mlflow.note.content"]
    assert runs[0].data.metrics["cf.distilled.test/ndcg_at_20.mean"] == summary["cf"]["distilled"]["test/ndcg@20"]["mean"]
    assert runs[0].data.metrics["ctr.gain: dagfm-distilled vs dagfm-alone.test/auc"] == pytest.approx(
        summary["ctr"]["gain: dagfm-distilled vs dagfm-alone"]["test/auc"])
