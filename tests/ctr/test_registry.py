"""Adding a model to the ctr track touches only the model, the registry, params and dvc.yaml.

A dummy student (a linear model over the field embeddings) is registered the way a real one
would be, one :class:`Entry` in ``ctr.STUDENTS``; nothing else in the track changes, and it
trains alone and by KD_DAGFM end to end, is evaluated and rebuilds from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
from pydantic import Field
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from recdistill import ctr, params
from recdistill.arm import ArmResult
from recdistill.train.checkpoint import read_checkpoint
from recdistill.publish import write_arm
from recdistill.data.ctr_features import CtrFeatures
from recdistill.models.ctr_embedding import FieldEmbedding
from recdistill.models.registry import Arch, Entry

SmallParams = Callable[..., params.Params]


class DummyArch(Arch):
    name: Literal["dummy"]
    hidden: Annotated[int, Field(ge=1)]  # width of the linear map's bottleneck


class Dummy(nn.Module):
    """logit = v^T (W flatten(emb)): a linear model over the field embeddings (B, F, D)."""

    def __init__(self, cardinalities: Sequence[int], n_multi: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(cardinalities, n_multi, embed_dim)
        self.down = nn.Linear(self.embedding.n_fields * embed_dim, hidden, bias=False)
        self.head = nn.Linear(hidden, 1)

    def interact(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: (B, F, D) float32 -> (B,) float32 logits."""
        return self.head(self.down(emb.flatten(1))).squeeze(1)  # (B, F*D) -> (B, H) -> (B,)

    def forward(self, ids: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
        """ids: (B, Fc) int64, multi: (B, G) float32 -> (B,) float32 logits."""
        return self.interact(self.embedding(ids, multi))  # (B,)


def build_dummy(arch: DummyArch, c: ctr.CtrContext) -> nn.Module:
    return Dummy(c.cardinalities, c.n_multi, c.embed_dim, hidden=arch.hidden)


DUMMY = {"name": "dummy", "hidden": 3}


@pytest.fixture()
def with_dummy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ctr.STUDENTS.entries, "dummy", Entry(DummyArch, build_dummy))


def check_dummy_arm(result: ArmResult, features: CtrFeatures, out: Path) -> None:
    """The arm names the dummy, its metrics match scikit-learn on its predictions, and its
    checkpoint rebuilds through the registry into the same predictions."""
    assert result.checkpoint.arch == DUMMY
    labels = result.predictions["label"].to_numpy()
    scores = result.predictions["score"].to_numpy().astype("float64")
    assert result.record.metrics["test/auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert result.record.metrics["test/logloss"] == pytest.approx(log_loss(labels, scores), abs=1e-6)
    assert result.record.cost.macs_per_example > 0
    write_arm(result, out)
    state, meta = read_checkpoint(out / "model.pt")
    arch = ctr.STUDENTS.arch(meta.arch, "checkpoint arch")
    context = ctr.CtrContext(tuple(meta.shape["cardinalities"]), meta.shape["n_multi"], meta.extra["embed_dim"])
    model = ctr.STUDENTS.build(arch, context)
    model.load_state_dict(state)
    assert isinstance(model, Dummy)
    rebuilt = torch.sigmoid(ctr.predict(model, features.test)).numpy()
    assert rebuilt.tolist() == result.predictions["score"].tolist()


@pytest.mark.usefixtures("with_dummy")
def test_a_registered_dummy_student_trains_alone_and_distilled(
        tmp_path: Path, ctr_features: CtrFeatures, small_params: SmallParams) -> None:
    p = small_params({"distill.ctr.student.model": DUMMY})
    alone = ctr.run_ctr("alone", p, features=ctr_features, seed=0)
    assert (alone.record.model, alone.record.role) == ("alone", "alone")
    check_dummy_arm(alone, ctr_features, tmp_path / "alone")

    write_arm(ctr.run_ctr("teacher", small_params({"train.ctr.optim.epochs": 1}), features=ctr_features,
                          seed=0), tmp_path / "teacher")
    teacher = ctr.load_ctr_teacher(tmp_path / "teacher" / "model.pt", ctr_features)
    distilled = ctr.run_ctr("student", p, features=ctr_features, seed=0, teacher=teacher)
    assert (distilled.record.model, distilled.record.role) == ("distilled", "student")
    assert distilled.checkpoint.extra["teacher"]["arch"]["name"] == "crossnet"
    check_dummy_arm(distilled, ctr_features, tmp_path / "distilled")


def test_an_unknown_student_is_a_params_error_listing_the_registered_names(
        small_params: SmallParams) -> None:
    p = small_params({"distill.ctr.student.model": DUMMY})
    with pytest.raises(params.ParamsError,
                       match=r"distill\.ctr\.student\.model\.name = 'dummy' is invalid: expected one of 'dagfm'$"):
        ctr.architecture("alone", p)
    with pytest.raises(params.ParamsError, match=r"distill\.ctr\.student\.model\.name"):
        ctr.run_ctr("alone", p, features=None, seed=0)  # type: ignore[arg-type]  # fails before any work
