"""KD_DAGFM: the loss, frozen embeddings in distillation, the student moving towards the teacher."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from recdistill.models.crossnet import CrossNet
from recdistill.models.dagfm import DAGFM
from recdistill.transfer.kd_dagfm import kd_dagfm, kd_loss, transplant_embedding

FIELDS = dict(cardinalities=(5, 6, 4), n_multi=3)  # F = 4


def test_kd_loss_is_alpha_bce_plus_beta_logit_mse() -> None:
    s, t = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, -1.5, 0.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    bce = -(math.log(1 / (1 + math.exp(-0.5))) + math.log(1 - 1 / (1 + math.exp(1.0)))
            + math.log(1 / (1 + math.exp(-2.0)))) / 3
    mse = (0.25 + 0.25 + 4.0) / 3
    assert_close(kd_loss(s, t, y, alpha=0.1, beta=921.6), torch.tensor(0.1 * bce + 921.6 * mse))


def toy_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(0, c, (n,), generator=g) for c in FIELDS["cardinalities"]], 1)
    multi = torch.softmax(torch.randn(n, 3, generator=g), 1)
    labels = (torch.rand(n, generator=g) < 0.6).float()
    return ids, multi, labels


def pair() -> tuple[CrossNet, DAGFM]:
    torch.manual_seed(0)
    teacher = CrossNet(**FIELDS, embed_dim=4, depth=2)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(0, 0.5)  # a "trained" teacher with sizeable logits
    return teacher, DAGFM(**FIELDS, embed_dim=4, depth=2, type="outer")


def test_distillation_step_freezes_embeddings_and_trains_interactions() -> None:
    teacher, student = pair()
    ids, multi, labels = toy_data()
    transplant_embedding(student, teacher, frozen=True)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainable = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=0.01)
    loss = kd_loss(student(ids, multi), teacher(ids, multi), labels, alpha=0.1, beta=10.0)
    loss.backward()
    opt.step()
    after = student.state_dict()
    for key in ("embedding.table.weight", "embedding.multi"):
        assert torch.equal(after[key], teacher_before[key]), f"{key} moved during distillation"
    for key in ("p", "q", "connect", "head.weight"):
        assert not torch.equal(after[key], before[key]), f"{key} did not learn"
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


def test_transplant_rejects_a_mismatched_embedding() -> None:
    teacher = CrossNet(**FIELDS, embed_dim=4, depth=1)
    with pytest.raises(ValueError, match="embed_dim"):
        transplant_embedding(DAGFM(**FIELDS, embed_dim=3, depth=1), teacher)
    with pytest.raises(TypeError, match="Linear cannot take part in KD_DAGFM: it needs a FieldEmbedding"):
        transplant_embedding(torch.nn.Linear(2, 1), teacher)


def test_both_phases_move_the_student_towards_the_teacher() -> None:
    teacher, student = pair()
    ids, multi, labels = toy_data()
    with torch.no_grad():
        t_logits = teacher(ids, multi)
        gap_before = torch.mean((student(ids, multi) - t_logits) ** 2).item()
    seen: list[tuple[str, int]] = []
    g = torch.Generator().manual_seed(0)

    def validate() -> dict[str, float]:  # agreement with the teacher stands in for AUC here
        return {"valid/auc": -torch.mean((student(ids, multi) - t_logits) ** 2).item()}

    result = kd_dagfm(student, teacher, train_ids=ids, train_multi=multi, train_labels=labels,
                      batches=lambda e: torch.randperm(256, generator=g).split(64), validate=validate,
                      monitor="valid/auc", mode="max",
                      alpha=0.0, beta=1.0, make_optimizer=lambda ps: torch.optim.Adam(ps, lr=0.02),
                      epochs=15, patience=15, on_epoch=lambda ph, e, m: seen.append((ph, e)))
    distilled = result.distill.best_state
    for key in ("embedding.table.weight", "embedding.multi"):  # phase 1 kept the teacher's table
        assert torch.equal(distilled[key], teacher.state_dict()[key])
    gap_distilled = -result.distill.best["valid/auc"]
    assert gap_distilled < 0.25 * gap_before, (gap_before, gap_distilled)
    assert seen[0] == ("distill", 1) and seen[-1][0] == "finetune"
    assert [row["phase"] for row in result.history].count("distill") == result.distill.epochs_run
    better = result.finetune.best["valid/auc"] > result.distill.best["valid/auc"]
    assert result.chosen == ("finetune" if better else "distill")
    chosen = result.finetune if better else result.distill
    assert all(torch.equal(v, chosen.best_state[k]) for k, v in student.state_dict().items())
    assert student.embedding.table.weight.requires_grad  # finetuning unfroze everything
