"""The three coldstart stages end to end on the synthetic dataset (no DVC, tmp outputs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import yaml

from recdistill import report
from recdistill.data.canonical import parse_archive, write_canonical
from recdistill.data.splits import make_all
from recdistill.graph import read_pickle
from recdistill.params import load
from recdistill.train import load_checkpoint

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
    raw["train"]["agnn"].update(epochs=2, batch_size=128, embed_dim=8, hidden_dim=8)
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


@pytest.mark.parametrize("scenario", ["ics", "ucs"])
def test_stages_write_outputs_the_report_can_check(workspace: Path, scenario: str) -> None:
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
    assert {p.name for p in out.iterdir()} == {"model.pt", "run.json", "history.json", "predictions.parquet"}
    state, meta = load_checkpoint(out / "model.pt")
    assert meta["scenario"] == scenario and "user.preference" in state
    results = report.parse_metrics_file(base_metrics, "coldstart") + report.parse_metrics_file(metrics, "coldstart")
    assert sorted(r.model for r in results) == sorted(
        f"{m}-{scenario}" for m in ("global-mean", "bias", "attribute-residual", "agnn"))
    spec = report.TRACKS["coldstart"]
    for r in results:
        run_dir = out if r.name_in_file == "agnn" else base_out
        assert report.verify(r, run_dir, spec, test=None, ks=(), tolerance=1e-4) == ("test/rmse", "test/mae")
    test = pd.read_parquet(split / "test.parquet")
    assert len(pd.read_parquet(out / "predictions.parquet")) == len(test)


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
    with pytest.raises(SystemExit, match="holds the neighbors of 'warm'"):
        _stage("coldstart_agnn").main(["ics", "--seed", "0", "--graph", str(ws / "warm.pkl"),
                                       "--split", str(ws / "prepared" / "ics"), "--out", str(ws / "x"),
                                       "--metrics", str(ws / "x.json"), "--params", str(ws / "params.yaml")])
    assert not (ws / "x").exists() and not (ws / "x.json").exists()
