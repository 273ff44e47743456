"""Full-ranking evaluation against brute force; training and distillation on a tiny split."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from repo_params import repo_params

from recdistill import seq
from recdistill.data.sequences import SeqSplit, history_mask, seq_batches
from recdistill.models.sasrec import SasrecArch
from recdistill.params import ParamsError, PeriodicOptim, SeqDistillParams
from recdistill.transfer.soft_targets import soft_target_kl


def _table_scorer(n_items: int, seed: int, integer: bool) -> seq.Scorer:
    """Scores that depend on the last input token only; integer scores force ties."""
    g = torch.Generator().manual_seed(seed)
    table = (torch.randint(0, 4, (n_items + 1, n_items + 1), generator=g).float() if integer
             else torch.rand((n_items + 1, n_items + 1), generator=g))
    return lambda inputs: table[inputs[:, -1]]


def _brute_force(scorer: seq.Scorer, split: SeqSplit, which: str, k: int) -> tuple[float, float]:
    inputs, targets = split.inputs(which)  # type: ignore[arg-type]
    scores = scorer(inputs).numpy()
    hist = history_mask(split, torch.arange(len(inputs)), which).numpy()  # type: ignore[arg-type]
    hr, ndcg = [], []
    for u, t in enumerate(targets.tolist()):
        others = [j for j in range(1, split.n_items + 1) if j != t and not hist[u, j]]
        rank = sum(scores[u, j] > scores[u, t] or (scores[u, j] == scores[u, t] and j < t) for j in others)
        hr.append(float(rank < k))
        ndcg.append(1 / math.log2(rank + 2) if rank < k else 0.0)
    return float(np.mean(hr)), float(np.mean(ndcg))


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("which", ["valid", "test"])
def test_full_ranking_matches_brute_force(make_split: Callable[..., SeqSplit], integer: bool, which: str) -> None:
    split = make_split(n_users=15, n_items=40, seed=4)
    scorer = _table_scorer(split.n_items, 0, integer)
    got = seq.rank(scorer, split, which, ks=(3, 10), batch_size=4).metrics  # type: ignore[arg-type]
    for k in (3, 10):
        hr, ndcg = _brute_force(scorer, split, which, k)
        assert got[f"hr@{k}"] == pytest.approx(hr, abs=1e-12)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)


def test_top_lists_skip_history_and_are_sorted(make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(n_users=10, n_items=40, seed=5)
    ranking = seq.rank(_table_scorer(split.n_items, 1, False), split, "test", ks=(10,), top=20)
    hist = history_mask(split, torch.arange(len(split.users)), "test")
    assert not hist.gather(1, ranking.top_items).any()
    assert (ranking.top_scores[:, :-1] >= ranking.top_scores[:, 1:]).all()


def test_sampled_variant_equals_full_ranking_when_all_unseen_items_are_sampled(
        make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(n_users=12, n_items=30, min_len=9, max_seq=9, seed=6)  # same history size
    n_unseen = split.n_items - 7 - 1  # 7 train items, minus the target
    scorer = _table_scorer(split.n_items, 2, False)
    every = seq.SampledRanking("every", n_unseen, seed=0)
    got = seq.rank(scorer, split, "valid", ks=(5,), sampled=every).metrics
    assert got["every_hr@5"] == pytest.approx(got["hr@5"], abs=1e-12)
    assert got["every_ndcg@5"] == pytest.approx(got["ndcg@5"], abs=1e-12)
    five = seq.SampledRanking("sampled5", 5, seed=0)
    few = seq.rank(scorer, split, "valid", ks=(5,), sampled=five).metrics
    assert few["sampled5_hr@5"] >= got["hr@5"]  # fewer competitors, never a worse rank
    flat = seq.rank(lambda x: torch.zeros(len(x), split.n_items + 1), split, "valid", ks=(5,),
                    sampled=five).metrics
    assert flat["sampled5_hr@5"] == 0.0  # ties count against the target
    with pytest.raises(ValueError, match=f"sampled_negatives = {n_unseen + 1} but a user has only {n_unseen}"):
        seq.rank(scorer, split, "valid", ks=(5,), sampled=seq.SampledRanking("x", n_unseen + 1, seed=0))


def test_the_sampled_label_comes_from_the_params(make_split: Callable[..., SeqSplit]) -> None:
    p = repo_params()
    p = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={"sampled_negatives": 7})})
    sampled = seq.SampledRanking.of(p)
    assert (sampled.label, sampled.negatives, sampled.seed) == ("sampled7", 7, p.data.seed)
    got = seq.rank(_table_scorer(30, 0, False), make_split(seed=3), "test", ks=(10,), sampled=sampled).metrics
    assert sorted(got) == ["hr@10", "ndcg@10", "sampled7_hr@10", "sampled7_ndcg@10"]


def test_popular_counts_train_interactions(make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(seed=7)
    counts = seq.popularity_counts(split)
    expected = np.zeros(split.n_items + 1)
    for row in split.history.tolist():
        for t in row:
            if t <= split.n_items:
                expected[t] += 1
    np.testing.assert_array_equal(counts.numpy(), expected)
    inputs = split.inputs("test")[0][:3]
    torch.testing.assert_close(seq.popularity_scorer(counts)(inputs), counts.expand(3, -1))


ARCH = SasrecArch(name="sasrec", hidden_dim=8, n_blocks=1, n_heads=1, dropout=0.1)
OPTIM = PeriodicOptim(lr=5e-3, weight_decay=0.0, batch_size=5, epochs=3, patience=2, eval_every=1)
CPU = torch.device("cpu")


def _kd(**update: object) -> SeqDistillParams:
    return repo_params().distill.seq.model_copy(update=update)


def test_training_is_deterministic_and_logs_every_epoch(make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(n_users=16, n_items=30, seed=8)
    runs = [seq.train_model(split, ARCH, OPTIM, seed=3, device=CPU, name="t", ks=(5, 10), monitor="valid/hr@10",
                            loss="bce")
            for _ in range(2)]
    (_, a), (_, b) = runs
    assert len(a.history) == 3 and all(math.isfinite(r["train/loss"]) for r in a.history)
    assert a.history == b.history  # no wall clock in the history: a rerun writes the same file
    assert {"valid/hr@5", "valid/ndcg@5", "valid/hr@10", "valid/ndcg@10"} <= set(a.history[0])
    best = max(range(3), key=lambda i: (a.history[i]["valid/hr@10"], -i))  # the first maximum
    assert a.best_epoch == best + 1  # selected on the monitored metric, not on ks[0]


def test_select_metric_must_be_one_the_track_computes() -> None:
    p = repo_params()
    assert seq.monitor(p) == f"valid/{p.evaluate.select.seq}"
    bad = p.model_copy(update={"evaluate": p.evaluate.model_copy(
        update={"select": p.evaluate.select.model_copy(update={"seq": "ndcg@5"})})})
    with pytest.raises(ParamsError, match=r"evaluate.select.seq = 'ndcg@5' is invalid: expected one of "
                                              r"hr@10, ndcg@10, hr@20, ndcg@20"):
        seq.resolve_arch("alone", bad)
    assert seq.resolve_arch("baseline", bad) is None  # not trained, nothing selected


@pytest.mark.parametrize("candidates", ["all", "sampled"])
def test_kd_scores_align_with_the_teacher_and_vanish_for_a_copy(
        make_split: Callable[..., SeqSplit], candidates: str) -> None:
    split = make_split(n_users=9, n_items=30, seed=9)
    torch.manual_seed(0)
    model = seq.seq_model(seq.MODELS.build(ARCH, seq.SeqContext(split.n_items, split.max_len)).eval())
    kd = _kd(candidates=candidates, n_candidates=12, teacher_top=5)
    targets = seq.teacher_targets(model, split.train[:, :-1], kd.teacher_top if candidates == "sampled" else 0)
    g = torch.Generator().manual_seed(0)
    for batch in seq_batches(split, 4, g):
        keep = batch.positives != 0
        h = model(batch.inputs)[keep]
        s, t = seq._kd_scores(model, h, targets, batch.rows, keep, batch.positives[keep], kd, g)
        torch.testing.assert_close(s, t, rtol=1e-4, atol=1e-4)  # cached teacher states line up
        assert soft_target_kl(s, t, 2.0).abs() < 1e-5
        if candidates == "sampled":
            assert s.shape[1] == 5 + 1 + 12  # teacher's top 5, the target, 12 shared items


def test_repeated_candidates_are_flagged_after_their_first_column() -> None:
    top = torch.tensor([[4, 2], [1, 3]])
    positives = torch.tensor([2, 5])
    shared = torch.tensor([4, 7, 5])
    expected = torch.tensor([[False, False, True, True, False, False],
                             [False, False, False, False, False, True]])
    assert torch.equal(seq._repeats(top, positives, shared, n_tokens=8), expected)


def test_distillation_runs_and_pulls_toward_the_teacher(make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(n_users=16, n_items=30, seed=10)
    trained, _ = seq.train_model(split, ARCH, OPTIM, seed=0, device=CPU, name="teacher", ks=(5,),
                                 monitor="valid/ndcg@5", loss="bce")
    teacher = seq.seq_model(trained)
    kd = _kd(temperature=2.0, kd_weight=1.0, candidates="all")
    arch, optim = ARCH.model_copy(update={"dropout": 0.0}), OPTIM.model_copy(update={"epochs": 6, "patience": 6})
    student, fit = seq.train_model(split, arch, optim, seed=1, device=CPU, name="kd", ks=(5,),
                                   monitor="valid/ndcg@5", loss="bce", teacher=teacher, kd=kd)
    alone, _ = seq.train_model(split, arch, optim, seed=1, device=CPU, name="alone", ks=(5,), monitor="valid/ndcg@5",
                            loss="bce")
    inputs = split.train[:, :-1]
    with torch.no_grad():
        keep = inputs != 0
        t = teacher.logits(teacher(inputs))[keep][:, 1:]
        gap = [soft_target_kl(m.logits(m(inputs))[keep][:, 1:], t, 2.0).item()
               for m in map(seq.seq_model, (student, alone))]
    assert all(math.isfinite(r["train/loss"]) for r in fit.history)
    assert gap[0] < gap[1]  # soft targets bring the student's distribution closer to the teacher's


def test_seq_model_trains_on_ce(make_split: Callable[..., SeqSplit]) -> None:
    """The ce loss trains end to end, deterministically, and not to the bce model's weights."""
    split = make_split(n_users=16, n_items=30, seed=8)
    optim = OPTIM.model_copy(update={"epochs": 2})
    runs = {loss: [seq.train_model(split, ARCH, optim, seed=3, device=CPU, name=loss, ks=(5,),
                                   monitor="valid/ndcg@5", loss=loss)[1] for _ in range(2)]
            for loss in ("ce", "bce")}
    ce, again = runs["ce"]
    assert ce.history == again.history and all(np.isfinite(r["train/loss"]) for r in ce.history)
    assert ce.history[0]["train/loss"] != runs["bce"][0].history[0]["train/loss"]
