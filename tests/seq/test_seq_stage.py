"""stages/seq_train.py end to end on a tiny split: every role writes its outs and metrics, and
the values in them agree with recomputations (the metrics from the predictions, the counts
from the data, the cost from the architecture); bad params and teachers fail before training."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from repo_params import REPO, repo_params

from recdistill import seq
from recdistill.arm import ArmRecord, read_metrics
from recdistill.train.checkpoint import read_checkpoint
from recdistill.cost import count_macs
from recdistill.params import ParamsError
from recdistill.train import CheckpointError

N_USERS, N_ITEMS, MAX_LEN = 14, 25, 6
SMALL = {"hidden_dim": 8, "n_blocks": 1, "n_heads": 1}
ARMS = {"teacher": "teacher", "student": "distilled", "alone": "alone", "baseline": "popular"}


def _tiny_data(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    train, valid, test = [], [], []
    for u in range(N_USERS):
        items = rng.permutation(N_ITEMS)[: rng.integers(6, 15)]
        train += [(u, int(i), 100 + p, p) for p, i in enumerate(items[:-2])]
        valid.append((u, int(items[-2])))
        test.append((u, int(items[-1])))
    data = root / "seq"
    data.mkdir(parents=True)
    pd.DataFrame(train, columns=["user", "item", "timestamp", "pos"]).to_parquet(data / "train.parquet")
    pd.DataFrame(valid, columns=["user", "item"]).to_parquet(data / "valid.parquet")
    pd.DataFrame(test, columns=["user", "item"]).to_parquet(data / "test.parquet")
    items_path = root / "items.parquet"
    pd.DataFrame({"item": np.arange(N_ITEMS)}).to_parquet(items_path)
    return data, items_path


def _params(path: Path, *, student: dict[str, Any] | None = None, max_len: int = MAX_LEN) -> Path:
    """The repository's params with a tiny model and budget, written to ``path``."""
    raw = repo_params().model_dump(mode="json")
    optim = {"epochs": 3, "eval_every": 1, "batch_size": 4, "patience": 3}
    raw["train"]["seq"]["model"].update(SMALL)
    raw["train"]["seq"]["optim"].update(optim)
    raw["distill"]["seq"]["student"]["model"].update({**SMALL, "hidden_dim": 4, **(student or {})})
    raw["distill"]["seq"]["student"]["optim"].update(optim)
    raw["distill"]["seq"].update(n_candidates=5, teacher_top=3)
    raw["data"]["seq"]["max_len"] = max_len
    raw["evaluate"].update(sampled_negatives=5)
    raw["runtime"].update(device="cpu")
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    spec = importlib.util.spec_from_file_location("seq_train_stage", REPO / "stages" / "seq_train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["seq_train.py", *argv])
    module.main()


def _recomputed(top: pd.DataFrame, test: pd.DataFrame, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k from the top lists and the held-out items, user by user."""
    hr, ndcg = [], []
    for user, item in zip(test["user"], test["item"]):
        ranks = top[(top["user"] == user) & (top["item"] == item)]["rank"].tolist()
        r = ranks[0] if ranks else math.inf
        hr.append(float(r <= k))
        ndcg.append(1 / math.log2(r + 1) if r <= k else 0.0)
    return float(np.mean(hr)), float(np.mean(ndcg))


def _sasrec_macs(n_blocks: int, d: int) -> int:
    """Per user, scoring all items: per block qkv + proj + ffn (6 L D^2) and QK^T, AV (2 L^2 D),
    the item table (D (I + 1)), and the element-wise products of the embedding scale and the
    padding masks (3 + n_blocks) L D."""
    L = MAX_LEN
    return n_blocks * (6 * L * d * d + 2 * L * L * d) + d * (N_ITEMS + 1) + (3 + n_blocks) * L * d


def _sasrec_params(n_blocks: int, d: int) -> int:
    """Item and position tables, per block 2 LayerNorms, qkv, proj, 2 ffn layers, final LayerNorm."""
    return (N_ITEMS + 1) * d + MAX_LEN * d + n_blocks * (4 * d + 6 * d * d + 6 * d) + 2 * d


@pytest.fixture(scope="module")
def arms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ArmRecord]]:
    """Every role run once: role -> (out dir, metrics record)."""
    tmp = tmp_path_factory.mktemp("seq-stage")
    data, items = _tiny_data(tmp / "prepared")
    params = _params(tmp / "params.yaml")
    common = ["--data", str(data), "--items", str(items), "--params", str(params), "--seed", "1"]
    out: dict[str, tuple[Path, ArmRecord]] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for role, name in ARMS.items():
            extra = ["--teacher", str(out["teacher"][0] / "model.pt")] if role == "student" else []
            out_dir, metrics = tmp / "models" / f"{name}-s1", tmp / "metrics" / f"{name}-s1.json"
            _run(monkeypatch, role, str(out_dir), str(metrics), *common, *extra)
            [record] = read_metrics(metrics)
            out[role] = out_dir, record
    return out


@pytest.mark.parametrize("role", list(ARMS))
def test_every_role_writes_its_arm(arms: dict[str, tuple[Path, ArmRecord]], role: str) -> None:
    out, record = arms[role]
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "predictions.parquet"]
    assert (record.track, record.model, record.role, record.seed) == ("seq", ARMS[role], role, 1)
    metrics = {f"{split}/{prefix}{m}@{k}" for split in ("valid", "test") for prefix in ("", "sampled5_")
               for m in ("hr", "ndcg") for k in (10, 20)}
    assert set(record.metrics) == metrics
    assert record.cost.device == "cpu"
    _, meta = read_checkpoint(out / "model.pt")
    assert (meta.track, meta.role, meta.seed) == ("seq", role, 1)
    assert meta.shape == {"n_items": N_ITEMS, "max_len": MAX_LEN}


@pytest.mark.parametrize("role", list(ARMS))
def test_test_metrics_equal_a_recomputation_from_the_predictions(
        arms: dict[str, tuple[Path, ArmRecord]], role: str) -> None:
    out, record = arms[role]
    top = pd.read_parquet(out / "predictions.parquet")
    assert list(top.columns) == ["user", "rank", "item", "score"] and len(top) == N_USERS * 20
    assert (top.groupby("user")["rank"].apply(list) == [list(range(1, 21))] * N_USERS).all()
    test = pd.read_parquet(out.parents[1] / "prepared" / "seq" / "test.parquet")
    for k in (10, 20):
        hr, ndcg = _recomputed(top, test, k)
        assert record.metrics[f"test/hr@{k}"] == pytest.approx(hr, abs=1e-12)
        assert record.metrics[f"test/ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)


@pytest.mark.parametrize("role", ["teacher", "student", "alone"])
def test_trained_arms_keep_the_epoch_of_the_selection_metric(
        arms: dict[str, tuple[Path, ArmRecord]], role: str) -> None:
    out, record = arms[role]
    history = json.loads((out / "history.json").read_text())
    monitored = "valid/" + repo_params().evaluate.select.seq
    scores = [row[monitored] for row in history]
    assert record.best_epoch == 1 + scores.index(max(scores))  # the first best: strict improvement
    assert record.metrics[monitored] == scores[record.best_epoch - 1]  # the kept state, re-ranked
    assert (record.epochs, record.stopped) == (3, "epoch_cap")
    _, meta = read_checkpoint(out / "model.pt")
    assert meta.selection == {k: v for k, v in history[record.best_epoch - 1].items() if k.startswith("valid/")}
    d = 4 if role != "teacher" else 8
    assert meta.arch == {"name": "sasrec", **SMALL, "hidden_dim": d, "dropout": 0.2}
    assert record.cost.params == _sasrec_params(1, d)
    assert (record.cost.macs_per_example, record.cost.macs_method) == (_sasrec_macs(1, d), "flop_counter")


def test_the_student_records_its_teacher(arms: dict[str, tuple[Path, ArmRecord]]) -> None:
    _, meta = read_checkpoint(arms["student"][0] / "model.pt")
    teacher = arms["teacher"][0] / "model.pt"
    assert meta.extra == {"teacher": {"path": str(teacher), "arch": read_checkpoint(teacher)[1].arch, "seed": 1}}


def test_the_baseline_counts_train_interactions(arms: dict[str, tuple[Path, ArmRecord]]) -> None:
    out, record = arms["baseline"]
    train = pd.read_parquet(out.parents[1] / "prepared" / "seq" / "train.parquet")
    expected = np.bincount(train["item"] + 1, minlength=N_ITEMS + 1)  # token = item + 1, 0 = padding
    state, meta = read_checkpoint(out / "model.pt")
    np.testing.assert_array_equal(state["counts"].numpy(), expected)
    top = pd.read_parquet(out / "predictions.parquet")
    finite = np.isfinite(top["score"])  # a short list fills up with masked (-inf) items
    np.testing.assert_array_equal(top["score"][finite], expected[top["item"][finite].to_numpy() + 1])
    assert (record.epochs, record.best_epoch, record.stopped) == (0, 0, "not_trained")
    assert (record.cost.params, record.cost.macs_per_example, record.cost.macs_method) == (N_ITEMS, 0, "formula")
    assert (meta.arch, meta.selection) == ({"name": "popular"}, {})


def test_a_teacher_of_other_data_is_refused(arms: dict[str, tuple[Path, ArmRecord]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = arms["teacher"][0] / "model.pt"
    prepared = teacher.parents[2] / "prepared"
    params = _params(tmp_path / "params.yaml", max_len=MAX_LEN - 1)
    with pytest.raises(CheckpointError, match=r"trained on other data \(max_len differ: \{'max_len': 6\} vs "
                                              r"this split's \{'max_len': 5\}\)"):
        _run(monkeypatch, "student", str(tmp_path / "o"), str(tmp_path / "m.json"), "--seed", "1",
             "--params", str(params), "--data", str(prepared / "seq"), "--items", str(prepared / "items.parquet"),
             "--teacher", str(teacher))
    assert not (tmp_path / "o").exists()


def test_a_student_needs_a_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _run(monkeypatch, "student", str(tmp_path / "o"), str(tmp_path / "m.json"), "--seed", "0")
    assert exit_.value.code == 2
    assert "--teacher is required for role student and only for it" in capsys.readouterr().err


def test_bad_heads_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = _params(tmp_path / "params.yaml", student={"hidden_dim": 6, "n_heads": 4})
    with pytest.raises(ParamsError, match=r"distill.seq.student.model.n_heads = 4 is invalid: "
                                          r"expected a divisor of hidden_dim \(6\)"):
        _run(monkeypatch, "alone", str(tmp_path / "o"), str(tmp_path / "m.json"), "--seed", "0",
             "--params", str(params), "--data", str(tmp_path / "no-such-split"))


def test_each_dvc_stage_runs_its_role() -> None:
    """(Its params are checked against what it reads in tests/test_pipeline_e2e.py.)"""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for role, arm in seq.ARMS.items():
        stage = stages[arm.stage]
        body = stage["do"] if "foreach" in stage else stage
        assert body["cmd"].startswith(f"python stages/seq_train.py {role} "), arm.stage


def test_sasrec_macs_count_attention_on_the_cpu() -> None:
    arch = seq.MODELS.arch({"name": "sasrec", "hidden_dim": 16, "n_blocks": 2, "n_heads": 2, "dropout": 0.1},
                           "train.seq.model")
    model = seq.seq_model(seq.MODELS.build(arch, seq.SeqContext(N_ITEMS, MAX_LEN)).eval())
    inputs = torch.randint(0, N_ITEMS + 1, (3, MAX_LEN))
    assert count_macs(lambda: model.score_last(inputs), 3) == _sasrec_macs(2, 16)
