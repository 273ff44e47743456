"""The three coldstart stages end to end on the synthetic dataset (no DVC, tmp outputs); their
metrics against the predictions they wrote, and those against the reloaded checkpoint."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from recdistill.arm import read_metrics
from recdistill.errors import UserError
from recdistill.coldstart.graphs import graph_from_payload
from recdistill.coldstart.training import TEACHERS, AgnnContext, NeighborSampler, Ratings, evaluate, graph_shape
from recdistill.data.canonical import parse_archive, write_canonical
from recdistill.data.splits import make_all
from recdistill.graph import read_pickle
from recdistill.models.agnn import AGNN
from recdistill.params import ParamsError, load
from recdistill.train.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]


def _stage(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(synth: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import synthetic  # the tests/ helper on sys.path (conftest)
    root = tmp_path_factory.mktemp("coldstart")
    c = parse_archive(synthetic.write_recbole(synth, root / "recbole-1.2.1-py3-none-any.whl"))
    write_canonical(c, root / "canonical")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["agnn"]["model"].update(embed_dim=8, hidden_dim=8)
    raw["train"]["agnn"]["optim"].update(epochs=2, batch_size=128)
    raw["runtime"]["device"] = "cpu"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    splits = make_all(c.ratings, len(c.users), len(c.items), load(root / "params.yaml").data)
    for scenario in ("warm", "ics", "ucs"):
        out = root / "prepared" / scenario
        out.mkdir(parents=True)
        for part in ("train", "valid", "test"):
            getattr(splits[f"coldstart/{scenario}"], part).to_parquet(out / f"{part}.parquet", index=False)
    return root


def _neighbors(ws: Path, scenario: str, out: Path) -> None:
    _stage("coldstart_neighbors").main([scenario, str(out), "--canonical", str(ws / "canonical"),
                                        "--train", str(ws / "prepared" / scenario / "train.parquet"),
                                        "--params", str(ws / "params.yaml")])


def _rmse_mae(frame: pd.DataFrame) -> tuple[float, float]:
    error = frame["prediction"].to_numpy(np.float64) - frame["rating"].to_numpy(np.float64)
    return float(np.sqrt(np.mean(error ** 2))), float(np.mean(np.abs(error)))


@pytest.mark.parametrize("scenario", ["ics", "ucs"])
def test_stages_write_what_their_predictions_and_weights_reproduce(workspace: Path, scenario: str) -> None:
    ws, split = workspace, workspace / "prepared" / scenario
    graph = ws / "neighbors" / f"{scenario}.pkl"
    _neighbors(ws, scenario, graph)
    assert read_pickle(graph)["scenario"] == scenario
    base_out, base_metrics = ws / "models" / f"baselines-{scenario}", ws / "metrics" / f"baselines-{scenario}.json"
    _stage("coldstart_baselines").main([scenario, "--split", str(split), "--canonical", str(ws / "canonical"),
                                        "--out", str(base_out), "--metrics", str(base_metrics),
                                        "--params", str(ws / "params.yaml")])
    out, metrics = ws / "models" / f"agnn-{scenario}-s0", ws / "metrics" / f"agnn-{scenario}-s0.json"
    _stage("coldstart_agnn").main([scenario, "--seed", "0", "--graph", str(graph), "--split", str(split),
                                   "--out", str(out), "--metrics", str(metrics),
                                   "--params", str(ws / "params.yaml")])
    test, train = pd.read_parquet(split / "test.parquet"), pd.read_parquet(split / "train.parquet")
    keys = test[["user", "item", "rating"]].reset_index(drop=True)

    baselines = read_metrics(base_metrics)
    predictions = pd.read_parquet(base_out / "predictions.parquet")
    assert sorted(b.model for b in baselines) == ["attribute-residual", "bias", "global-mean"]
    for b in baselines:
        assert (b.track, b.role, b.scenario, b.seed, b.epochs, b.stopped) == (
            "coldstart", "baseline", scenario, 0, 0, "not_trained")
        rows = predictions[predictions["model"] == b.model].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows[["user", "item", "rating"]], keys)
        rmse, mae = _rmse_mae(rows)
        assert b.metrics["test/rmse"] == pytest.approx(rmse, abs=1e-6)
        assert b.metrics["test/mae"] == pytest.approx(mae, abs=1e-6)
    global_mean = predictions.loc[predictions["model"] == "global-mean", "prediction"]
    np.testing.assert_allclose(global_mean, np.clip(train["rating"].mean(), 1, 5), rtol=1e-6)

    [agnn] = read_metrics(metrics)
    assert (agnn.track, agnn.model, agnn.role, agnn.scenario, agnn.seed) == ("coldstart", "agnn", "teacher", scenario, 0)
    assert agnn.cost.macs_per_example > 0 and agnn.cost.macs_method == "formula"
    assert {p.name for p in out.iterdir()} == {"model.pt", "history.json", "predictions.parquet"}
    frame = pd.read_parquet(out / "predictions.parquet")
    pd.testing.assert_frame_equal(frame[["user", "item", "rating"]], keys)
    rmse, mae = _rmse_mae(frame)
    assert agnn.metrics["test/rmse"] == pytest.approx(rmse, abs=1e-9)
    assert agnn.metrics["test/mae"] == pytest.approx(mae, abs=1e-9)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == agnn.epochs and history[agnn.best_epoch - 1]["valid/rmse"] == agnn.metrics["valid/rmse"]
    # the checkpoint rebuilds the model through the registry and scores the test rows again
    g = graph_from_payload(read_pickle(graph))
    cpu = torch.device("cpu")
    model, meta = load_model(out / "model.pt", "coldstart", TEACHERS, AgnnContext(g, cpu), role="teacher",
                             shape=graph_shape(g), device=cpu)
    assert isinstance(model, AGNN) and meta.extra == {"scenario": scenario} and meta.best_epoch == agnn.best_epoch
    n = meta.arch["n_neighbors"]
    again = evaluate(model, NeighborSampler(g.users, n, cpu), NeighborSampler(g.items, n, cpu),
                     Ratings.from_frame(test))
    np.testing.assert_array_equal(again.numpy(), frame["prediction"].to_numpy())


def test_bad_agnn_params_fail_before_any_work(workspace: Path, tmp_path: Path) -> None:
    ws = workspace
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    cases = [("evaluate", "select", "coldstart", "ndcg@20",
              "evaluate.select.coldstart = 'ndcg@20' is invalid: expected one of 'rmse', 'mae'"),
             ("train", "agnn", "model", {"name": "gcmc"},
              "train.agnn.model.name = 'gcmc' is invalid: expected one of 'agnn'")]
    for section, block, key, value, message in cases:
        bad = copy.deepcopy(raw)
        bad[section][block][key] = value
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(ParamsError, match=re.escape(message)):  # the graph is never read
            _stage("coldstart_agnn").main(["ics", "--seed", "0", "--graph", str(tmp_path / "none.pkl"),
                                           "--split", str(ws / "prepared" / "ics"), "--out", str(tmp_path / "x"),
                                           "--metrics", str(tmp_path / "x.json"),
                                           "--params", str(tmp_path / "params.yaml")])
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.json").exists()


def test_neighbors_ignore_validation_and_test_ratings(workspace: Path) -> None:
    ws = workspace
    _neighbors(ws, "ucs", ws / "a.pkl")
    for part in ("valid", "test"):  # perturb every cold user's ratings
        path = ws / "prepared" / "ucs" / f"{part}.parquet"
        df = pd.read_parquet(path)
        df.assign(rating=(6 - df["rating"]).astype(df["rating"].dtype)).to_parquet(path, index=False)
    _neighbors(ws, "ucs", ws / "b.pkl")
    a, b = read_pickle(ws / "a.pkl"), read_pickle(ws / "b.pkl")
    for side in ("users", "items"):
        np.testing.assert_array_equal(a[side]["neighbors"], b[side]["neighbors"])
        np.testing.assert_array_equal(a[side]["weights"], b[side]["weights"])


def test_agnn_refuses_a_graph_of_another_scenario(workspace: Path) -> None:
    ws = workspace
    _neighbors(ws, "warm", ws / "warm.pkl")
    with pytest.raises(UserError, match="warm.pkl holds the neighbors of 'warm', not 'ics'"):
        _stage("coldstart_agnn").main(["ics", "--seed", "0", "--graph", str(ws / "warm.pkl"),
                                       "--split", str(ws / "prepared" / "ics"), "--out", str(ws / "x"),
                                       "--metrics", str(ws / "x.json"), "--params", str(ws / "params.yaml")])
    assert not (ws / "x").exists() and not (ws / "x.json").exists()
