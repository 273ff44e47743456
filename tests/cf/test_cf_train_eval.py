"""cf track: full-ranking evaluation against brute force, top-k lists, cost, a tiny training run."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from recdistill import cf
from recdistill.data.interactions import CfSplits, Interactions
from recdistill.models.mf import MF
from recdistill.params import MfParams
from recdistill.transfer.cross_fusion import CrossFusion

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
                k: int) -> tuple[float, float, float]:
    """Mean recall@k, ndcg@k and AUC over users with a relevant item, by plain Python."""
    recalls, ndcgs, aucs = [], [], []
    for u in range(scores.shape[0]):
        rel = {i for (v, i) in relevant if v == u}
        if not rel:
            continue
        ranked = [i for i in range(scores.shape[1]) if (u, i) not in seen]
        order = sorted(ranked, key=lambda i: (-scores[u, i], i))[:k]  # ties: lower index first
        hits = [i in rel for i in order]
        recalls.append(sum(hits) / len(rel))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        ndcgs.append(sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / ideal)
        pos = [scores[u, i] for i in ranked if i in rel]
        neg = [scores[u, i] for i in ranked if i not in rel]
        if pos and neg:
            aucs.append(sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
                        / (len(pos) * len(neg)))
    return float(np.mean(recalls)), float(np.mean(ndcgs)), float(np.mean(aucs))


def as_set(x: Interactions) -> set[tuple[int, int]]:
    return set(zip(x.users.tolist(), x.items.tolist(), strict=True))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_full_ranking_metrics_match_brute_force_with_ties_and_masks(split: str) -> None:
    splits, model = tiny_splits(), tied_model()
    scores = (model.user.weight @ model.item.weight.T).detach().numpy()
    seen = as_set(splits.train) | (as_set(splits.valid) if split == "test" else set())
    got = cf.evaluate(model, splits, split, ks=(1, 2))  # type: ignore[arg-type]
    for k in (1, 2):
        recall, ndcg, auc = brute_force(scores, seen, as_set(getattr(splits, split)), k)
        torch.testing.assert_close(got[f"{split}/recall@{k}"], recall, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got[f"{split}/ndcg@{k}"], ndcg, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got[f"{split}/auc"], auc, rtol=1e-9, atol=1e-9)


def test_top_k_frame_masks_train_and_valid_items() -> None:
    splits, model = tiny_splits(), tied_model()
    frame = cf.top_k_frame(model, splits, k=2)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    assert frame["user"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and frame["rank"].tolist() == [1, 2] * 4
    # user 0: train {0, 1}, valid {2}; scores of items 3, 4, 5 are 1, 0, 1 -> 3 then 5 (tie, lower id)
    assert frame.loc[frame.user == 0, "item"].tolist() == [3, 5]
    seen = as_set(splits.train) | as_set(splits.valid)
    assert not any((u, i) in seen for u, i in zip(frame.user, frame.item, strict=True))


def test_scoring_cost_counts_parameters() -> None:
    cost = cf.scoring_cost(tied_model(), tiny_splits(), k=2, repeats=1)
    assert cost["params"] == (U + I) * 2 and cost["macs_per_example"] == 2
    assert cost["latency_ms"] > 0 and cost["latency_unit"] == "all users"


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
    hp = MfParams(embed_dim=8, lr=0.02, weight_decay=0.0, batch_size=64, epochs=20, patience=20,
                  eval_every=5)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = cf.build_model("mf", splits, hp)
        fit = cf.train_cf(model, splits, hp, generator=torch.Generator().manual_seed(0),
                          name="tiny")
        results.append((fit.best, cf.evaluate(model, splits, "test", (10, 20))))
    assert results[0] == results[1]  # same seed, same numbers, bit for bit
    # 31 unmasked items per user, 11 of them in the user's cluster: a random ranking gives
    # recall@10 ~ 10/31 and AUC 0.5; ranking the cluster first (randomly inside it) gives
    # recall@10 ~ 10/11 and AUC ~ (20 + 10/2) / 30 = 0.83
    assert results[0][1]["test/recall@10"] > 0.8 and results[0][1]["test/auc"] > 0.78


def test_cross_fusion_pulls_the_main_model_to_the_meta_scores() -> None:
    splits = synthetic_splits(1)
    hp = MfParams(embed_dim=8, lr=0.05, weight_decay=0.0, batch_size=64, epochs=10, patience=10,
                  eval_every=5)
    torch.manual_seed(0)
    meta = cf.build_model("mf", splits, replace(hp, epochs=20))
    cf.train_cf(meta, splits, replace(hp, epochs=20), generator=torch.Generator().manual_seed(0),
                name="meta")
    e_u, e_i = (t.detach() for t in meta.embeddings())
    gaps = []
    for lam in (0.0, 10.0):
        torch.manual_seed(1)
        main = cf.build_model("mf", splits, hp)
        cf.train_cf(main, splits, hp, generator=torch.Generator().manual_seed(1),
                    name="main", transfer=CrossFusion(e_u, e_i, lam, lam))
        h_i = main.embeddings()[1].detach()
        users, items = splits.train.users, splits.train.items
        target = (e_u[users] * e_i[items]).sum(-1)  # the meta scores
        gaps.append(float(((e_u[users] * h_i[items]).sum(-1) - target).pow(2).mean()))
    assert gaps[1] < 0.5 * gaps[0]


def test_meta_checkpoint_of_the_wrong_model_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recdistill.train import CheckpointError, save_checkpoint
    splits = tiny_splits()
    path = tmp_path / "model.pt"
    save_checkpoint(path, tied_model().state_dict(), {"model": "mf", "n_users": U, "n_items": I,
                                                      "hparams": {"embed_dim": 2}})
    with pytest.raises(CheckpointError, match="expected a LightGCN meta model over 4 users"):
        cf.load_meta_embeddings(path, splits)
