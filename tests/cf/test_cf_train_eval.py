"""cf track: full-ranking evaluation against brute force, top-k lists, cost, selection, tiny
training runs, loading the meta model, and run_cf end to end in process."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recdistill import cf, params
from recdistill.arm import ArmResult, CheckpointMeta
from recdistill.publish import write_arm
from recdistill.data.interactions import CfSplits, Interactions, normalized_adjacency
from recdistill.models.lightgcn import LightGCN, LightGcnArch
from recdistill.models.mf import MF, MfArch
from recdistill.params import ParamsError
from recdistill.train import CheckpointError, save_checkpoint
from recdistill.transfer.cross_fusion import CrossFusion

REPO = Path(__file__).resolve().parents[2]
P = params.load(REPO / "params.yaml")
U, I = 4, 6  # noqa: E741  (users, items)


def tiny_splits() -> CfSplits:
    def pairs(p: list[tuple[int, int]]) -> Interactions:
        return Interactions.from_arrays([u for u, _ in p], [i for _, i in p], n_users=U, n_items=I)
    train = pairs([(0, 0), (0, 1), (1, 2), (2, 0), (2, 5), (3, 3)])
    valid = pairs([(0, 2), (1, 0), (2, 1), (3, 4)])
    test = pairs([(0, 3), (0, 5), (1, 1), (1, 4), (2, 2), (3, 0)])  # user 3's 0 ties with item 1
    return CfSplits(train, valid, test)


def tied_model() -> MF:
    model = MF(U, I, embed_dim=2)
    with torch.no_grad():  # integer embeddings: many exactly tied scores
        model.user.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
        model.item.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 2.0],
                                              [1.0, 1.0]]))
    return model


def brute_force(scores: np.ndarray, seen: set[tuple[int, int]], relevant: set[tuple[int, int]],
                k: int) -> dict[str, float]:
    """Mean recall@k, ndcg@k, hr@k and AUC over users with a relevant item, by plain Python."""
    out: dict[str, list[float]] = {"recall": [], "ndcg": [], "hr": [], "auc": []}
    for u in range(scores.shape[0]):
        rel = {i for (v, i) in relevant if v == u}
        if not rel:
            continue
        ranked = [i for i in range(scores.shape[1]) if (u, i) not in seen]
        order = sorted(ranked, key=lambda i: (-scores[u, i], i))[:k]  # ties: lower index first
        hits = [i in rel for i in order]
        out["recall"].append(sum(hits) / len(rel))
        out["hr"].append(float(any(hits)))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        out["ndcg"].append(sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / ideal)
        pos = [scores[u, i] for i in ranked if i in rel]
        neg = [scores[u, i] for i in ranked if i not in rel]
        if pos and neg:
            out["auc"].append(sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
                              / (len(pos) * len(neg)))
    return {name: float(np.mean(values)) for name, values in out.items()}


def as_set(x: Interactions) -> set[tuple[int, int]]:
    return set(zip(x.users.tolist(), x.items.tolist(), strict=True))


def optim(**update: object) -> params.PeriodicOptim:
    """The main model's optimisation block of params.yaml, with ``update``."""
    return P.distill.cf.student.optim.model_copy(update=update)


def small_params(lambdas: float | None = None, **select: str) -> params.Params:
    """params.yaml with the cf blocks shrunk for the synthetic data (and ``evaluate.select``,
    both cross-fusion weights = ``lambdas`` if given)."""
    small = {"lr": 0.02, "batch_size": 128, "epochs": 6, "patience": 2, "eval_every": 2}
    train_cf = P.train.cf.model_copy(update={"embed_dim": 8,
                                             "optim": P.train.cf.optim.model_copy(update=small)})
    student = P.distill.cf.student.model_copy(update={"optim": optim(**small)})
    weights = {} if lambdas is None else {"lambda1": lambdas, "lambda2": lambdas}
    distill_cf = P.distill.cf.model_copy(update={"student": student, **weights})
    return P.model_copy(update={
        "train": P.train.model_copy(update={"cf": train_cf}),
        "distill": P.distill.model_copy(update={"cf": distill_cf}),
        "evaluate": P.evaluate.model_copy(update={"select": P.evaluate.select.model_copy(update=select)})})


@pytest.mark.parametrize("split", ["valid", "test"])
def test_full_ranking_metrics_match_brute_force_with_ties_and_masks(split: str) -> None:
    splits, model = tiny_splits(), tied_model()
    scores = (model.user.weight @ model.item.weight.T).detach().numpy()
    seen = as_set(splits.train) | (as_set(splits.valid) if split == "test" else set())
    got = cf.evaluate(model, splits, split, ks=(1, 2))  # type: ignore[arg-type]
    assert sorted(got) == sorted(f"{split}/{m}" for m in cf.selectable((1, 2)))
    for k in (1, 2):
        expected = brute_force(scores, seen, as_set(getattr(splits, split)), k)
        for metric in ("recall", "ndcg", "hr"):
            torch.testing.assert_close(got[f"{split}/{metric}@{k}"], expected[metric], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got[f"{split}/auc"], expected["auc"], rtol=1e-9, atol=1e-9)


def test_top_k_frame_masks_train_and_valid_items() -> None:
    splits, model = tiny_splits(), tied_model()
    frame = cf.top_k_frame(model, splits, k=2)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    assert frame["user"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and frame["rank"].tolist() == [1, 2] * 4
    # user 0: train {0, 1}, valid {2}; scores of items 3, 4, 5 are 1, 0, 1 -> 3 then 5 (tie, lower id)
    assert frame.loc[frame.user == 0, "item"].tolist() == [3, 5]
    seen = as_set(splits.train) | as_set(splits.valid)
    assert not any((u, i) in seen for u, i in zip(frame.user, frame.item, strict=True))


def test_cost_of_mf_is_the_counted_product() -> None:
    cost = cf.measure_cost(tied_model(), tiny_splits())
    assert (cost.params, cost.macs_per_example, cost.macs_method, cost.device) == ((U + I) * 2, 2, "flop_counter", "cpu")


def test_cost_of_lightgcn_adds_its_propagation_by_formula() -> None:
    splits = tiny_splits()
    model = LightGCN(U, I, embed_dim=8, n_layers=3, norm_adj=normalized_adjacency(splits.train))
    cost = cf.measure_cost(model, splits)
    # D = 8 per pair for the product; 3 layers x 12 stored entries (6 pairs, both directions)
    # x 8 = 288 for all U * I = 24 pairs: 12 per pair
    assert (cost.params, cost.macs_per_example, cost.macs_method) == ((U + I) * 8, 8 + 12, "formula")


def test_selection_names_a_metric_the_track_computes() -> None:
    assert cf.selection(P) == "valid/ndcg@20"
    assert cf.selection(small_params(cf="auc")) == "valid/auc"
    with pytest.raises(ParamsError, match=r"evaluate.select.cf = 'ndcg@5' is invalid: expected one of "
                                          r"'recall@10', .*'auc' \(the metrics the cf track computes at "
                                          r"evaluate.ks = \[10, 20\]\)"):
        cf.selection(small_params(cf="ndcg@5"))
    with pytest.raises(ParamsError, match="evaluate.select.cf = 'rmse' is invalid"):
        cf.selection(small_params(cf="rmse"))


def test_architecture_blocks_are_validated_by_the_registry() -> None:
    assert cf.architecture("teacher", P) == LightGcnArch(name="lightgcn", n_layers=3)
    assert cf.architecture("alone", P) == cf.architecture("student", P) == MfArch(name="mf")
    bad = P.train.cf.model_copy(update={"model": params.ModelBlock(name="lightgcn", n_layers=-1)})
    with pytest.raises(ParamsError, match=r"train.cf.model.n_layers = -1 is invalid: expected a value >= 0"):
        cf.architecture("teacher", P.model_copy(update={"train": P.train.model_copy(update={"cf": bad})}))
    with pytest.raises(ValueError, match="the cf track has no 'baseline' arm"):
        cf.architecture("baseline", P)


def synthetic_splits(seed: int = 0) -> CfSplits:
    """Two taste clusters of 30 users over 40 items, per-user 80/10/10."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(60):
        block = np.arange(20) + 20 * (u % 2)
        for i in rng.choice(block, size=10, replace=False):
            rows.append((u, int(i)))
    df = pd.DataFrame(rows, columns=["user", "item"]).sample(frac=1.0, random_state=seed)
    rank = df.groupby("user").cumcount()
    parts = [df[rank < 8], df[rank == 8], df[rank == 9]]
    return CfSplits(*(Interactions.from_arrays(p.user, p.item, n_users=60, n_items=40) for p in parts))


def test_training_learns_the_clusters_and_is_deterministic() -> None:
    splits = synthetic_splits()
    hp = optim(lr=0.02, weight_decay=0.0, batch_size=64, epochs=20, patience=20, eval_every=5)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = cf.build_model(MfArch(name="mf"), cf.CfContext(splits.train, 8))
        fit = cf.train_cf(model, splits, hp, monitor="valid/ndcg@20",
                          generator=torch.Generator().manual_seed(0), name="tiny")
        results.append((fit.best, cf.evaluate(model, splits, "test", (10, 20)),
                        cf.evaluate(model, splits, "valid", (10, 20))))
    assert results[0] == results[1]  # same seed, same numbers, bit for bit
    # the selection metric is the same computation as the reported one, at the kept state
    assert results[0][0]["valid/ndcg@20"] == results[0][2]["valid/ndcg@20"]
    # 31 unmasked items per user, 11 of them in the user's cluster: a random ranking gives
    # recall@10 ~ 10/31 and AUC 0.5; ranking the cluster first (randomly inside it) gives
    # recall@10 ~ 10/11 and AUC ~ (20 + 10/2) / 30 = 0.83
    assert results[0][1]["test/recall@10"] > 0.8 and results[0][1]["test/auc"] > 0.78


@pytest.mark.parametrize("monitor", ["valid/auc", "valid/recall@10", "valid/hr@20"])
def test_early_stopping_follows_the_selected_metric(monitor: str) -> None:
    splits = synthetic_splits()
    torch.manual_seed(0)
    model = cf.build_model(MfArch(name="mf"), cf.CfContext(splits.train, 8))
    fit = cf.train_cf(model, splits, optim(lr=0.02, batch_size=64, epochs=12, patience=5, eval_every=2),
                      monitor=monitor, generator=torch.Generator().manual_seed(0), name="tiny")
    seen = [row[monitor] for row in fit.history if monitor in row]
    assert len(seen) == 6 and fit.best[monitor] == max(seen)
    assert fit.history[fit.best_epoch - 1][monitor] == max(seen)
    assert fit.best[monitor] == cf.evaluate(model, splits, "valid", (10, 20))[monitor]


def test_train_cf_refuses_a_metric_it_does_not_compute() -> None:
    splits = tiny_splits()
    with pytest.raises(ValueError, match="monitor 'valid/rmse' is not a cf validation metric"):
        cf.train_cf(tied_model(), splits, optim(), monitor="valid/rmse",
                    generator=torch.Generator(), name="tiny")


def test_cross_fusion_pulls_the_main_model_to_the_meta_scores() -> None:
    splits = synthetic_splits(1)
    hp = optim(lr=0.05, weight_decay=0.0, batch_size=64, epochs=10, patience=10, eval_every=5)
    context = cf.CfContext(splits.train, 8)
    torch.manual_seed(0)
    meta = cf.build_model(MfArch(name="mf"), context)
    cf.train_cf(meta, splits, hp.model_copy(update={"epochs": 20}), monitor="valid/ndcg@20",
                generator=torch.Generator().manual_seed(0), name="meta")
    assert isinstance(meta, MF)
    e_u, e_i = (t.detach() for t in meta.embeddings())
    gaps = []
    for lam in (0.0, 10.0):
        torch.manual_seed(1)
        main = cf.build_model(MfArch(name="mf"), context)
        cf.train_cf(main, splits, hp, monitor="valid/ndcg@20", generator=torch.Generator().manual_seed(1),
                    name="main", transfer=CrossFusion(e_u, e_i, lam, lam))
        assert isinstance(main, MF)
        h_i = main.embeddings()[1].detach()
        users, items = splits.train.users, splits.train.items
        target = (e_u[users] * e_i[items]).sum(-1)  # the meta scores
        gaps.append(float(((e_u[users] * h_i[items]).sum(-1) - target).pow(2).mean()))
    assert gaps[1] < 0.5 * gaps[0]


def checkpoint_meta(**update: object) -> CheckpointMeta:
    base = CheckpointMeta(track="cf", role="teacher", seed=0, arch={"name": "lightgcn", "n_layers": 2},
                          shape={"n_users": U, "n_items": I}, selection={}, best_epoch=1,
                          extra={"embed_dim": 3})
    return base.model_copy(update=update)


def test_load_cf_teacher_gives_the_final_embeddings_of_the_checkpoint(tmp_path: Path) -> None:
    splits = tiny_splits()
    torch.manual_seed(0)
    model = LightGCN(U, I, embed_dim=3, n_layers=2, norm_adj=normalized_adjacency(splits.train))
    save_checkpoint(tmp_path / "model.pt", model.state_dict(), checkpoint_meta().model_dump(mode="json"))
    teacher = cf.load_cf_teacher(tmp_path / "model.pt", splits)
    # reference: two dense propagations of the layer-0 table, averaged with it
    e0 = torch.cat([model.user.weight, model.item.weight]).detach()  # (N, D)
    dense = normalized_adjacency(splits.train).to_dense()
    final = (e0 + dense @ e0 + dense @ (dense @ e0)) / 3
    torch.testing.assert_close(teacher.user, final[:U], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(teacher.item, final[U:], rtol=1e-6, atol=1e-7)
    assert not teacher.user.requires_grad and teacher.meta.arch["name"] == "lightgcn"


@pytest.mark.parametrize(("update", "message"), [
    ({"role": "alone"}, "is a cf alone, not a cf teacher"),
    ({"track": "ctr"}, "is a ctr teacher, not a cf teacher"),
    ({"shape": {"n_users": U + 1, "n_items": I}}, r"was trained on other data \(n_users differ"),
    ({"extra": {}}, "records no extra.embed_dim, so it is not a cf model"),
    ({"arch": {"name": "gru"}}, r"arch.name = 'gru' is invalid: expected one of 'lightgcn', 'mf'"),
    ({"extra": {"embed_dim": 4}}, "does not fit its lightgcn architecture"),
])
def test_load_cf_teacher_refuses_other_checkpoints(tmp_path: Path, update: dict[str, object],
                                                   message: str) -> None:
    splits = tiny_splits()
    model = LightGCN(U, I, embed_dim=3, n_layers=2, norm_adj=normalized_adjacency(splits.train))
    meta = checkpoint_meta(**update).model_dump(mode="json")
    save_checkpoint(tmp_path / "model.pt", model.state_dict(), meta)
    with pytest.raises(CheckpointError, match=message):
        cf.load_cf_teacher(tmp_path / "model.pt", splits)


def recomputed(predictions: pd.DataFrame, test: Interactions, k: int) -> dict[str, float]:
    """recall@k and ndcg@k from the top-k lists by plain Python: the report's recomputation."""
    relevant: dict[int, set[int]] = {}
    for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True):
        relevant.setdefault(u, set()).add(i)
    recalls, ndcgs = [], []
    for user, rel in relevant.items():
        top = predictions[(predictions.user == user) & (predictions["rank"] <= k)].sort_values("rank")
        hits = [i in rel for i in top["item"]]
        recalls.append(sum(hits) / len(rel))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        ndcgs.append(sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / ideal)
    return {f"test/recall@{k}": float(np.mean(recalls)), f"test/ndcg@{k}": float(np.mean(ndcgs))}


def check_arm(result: ArmResult, splits: CfSplits, role: str, arch: str) -> None:
    record, meta = result.record, result.checkpoint
    assert (record.track, record.role, record.model, record.seed) == ("cf", role, cf.ARM_NAMES[role], 0)
    assert meta.arch["name"] == arch and meta.shape == {"n_users": 60, "n_items": 40}
    assert meta.extra["embed_dim"] == 8 and record.cost.params == (60 + 40) * 8
    assert record.epochs == len(result.history) and record.stopped in ("early_stopping", "epoch_cap")
    selected = result.history[record.best_epoch - 1]["valid/ndcg@20"]
    assert record.metrics["valid/ndcg@20"] == meta.selection["valid/ndcg@20"] == selected
    assert selected == max(row["valid/ndcg@20"] for row in result.history if "valid/ndcg@20" in row)
    assert len(result.predictions) == 60 * 20
    for key, value in recomputed(result.predictions, splits.test, 20).items():
        assert record.metrics[key] == pytest.approx(value, abs=1e-9)


def test_run_cf_trains_each_arm_and_the_student_learns_from_the_checkpoint(tmp_path: Path) -> None:
    splits, p = synthetic_splits(2), small_params()
    meta = cf.run_cf("teacher", p, splits=splits, seed=0, progress=False)
    check_arm(meta, splits, "teacher", "lightgcn")
    assert meta.record.cost.macs_method == "formula" and "teacher" not in meta.checkpoint.extra
    write_arm(meta, tmp_path)
    teacher = cf.load_cf_teacher(tmp_path / "model.pt", splits)
    student = cf.run_cf("student", p, splits=splits, seed=0, teacher=teacher, progress=False)
    check_arm(student, splits, "student", "mf")
    assert student.checkpoint.extra["teacher"]["selection"] == meta.checkpoint.selection
    alone = cf.run_cf("alone", p, splits=splits, seed=0, progress=False)
    check_arm(alone, splits, "alone", "mf")
    assert alone.record.cost.macs_method == "flop_counter" and alone.record.cost.macs_per_example == 8
    assert not torch.equal(alone.state["user.weight"], student.state["user.weight"])
    # the same initial MF and the same batches: with zero weights the transfer changes nothing
    zero = cf.run_cf("student", small_params(lambdas=0.0), splits=splits, seed=0, teacher=teacher,
                     progress=False)
    assert zero.record.metrics == alone.record.metrics and zero.record.best_epoch == alone.record.best_epoch
    assert all(torch.equal(zero.state[k], alone.state[k]) for k in alone.state)
    with pytest.raises(ValueError, match="the cf student arm takes a teacher"):
        cf.run_cf("student", p, splits=splits, seed=0)


def test_scoring_pass_is_the_masked_top_k_of_all_users() -> None:
    """What the cf-latency stage times: every user's top k unseen items (train and valid
    masked), checked against numpy on distinct scores."""
    splits = tiny_splits()
    model = MF(U, I, embed_dim=2)
    with torch.no_grad():
        model.user.weight.copy_(torch.tensor([[1.0, 0.1], [0.2, 1.0], [1.0, 0.7], [0.3, 0.4]]))
        model.item.weight.copy_(torch.tensor([[0.9, 0.1], [0.5, 0.6], [0.3, 0.35], [0.15, 0.8],
                                              [0.05, 0.5], [0.7, 0.45]]))
    top = cf.scoring_pass(model, splits, k=2)()
    scores = model.user.weight.detach().numpy() @ model.item.weight.detach().numpy().T  # (U, I)
    for split in (splits.train, splits.valid):
        scores[split.users.numpy(), split.items.numpy()] = -np.inf
    np.testing.assert_array_equal(top.numpy(), np.argsort(-scores, axis=1, kind="stable")[:, :2])
