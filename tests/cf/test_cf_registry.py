"""Adding a model to the cf track touches only the model, the registry, params and dvc.yaml.

A dummy model (MF whose user vectors are scaled by a fixed factor) is registered the way a
real one would be, one :class:`Entry` in ``cf.MODELS``; nothing else in the track changes,
and it trains as the main model and as the meta model, and rebuilds from its checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

from recdistill import cf, params
from recdistill.train.checkpoint import read_checkpoint
from recdistill.publish import write_arm
from recdistill.models.registry import Arch, Entry

sys.path.insert(0, str(Path(__file__).parent))
from test_cf_train_eval import P, synthetic_splits  # noqa: E402

DUMMY = {"name": "dummy", "scale": 2.0}


class DummyArch(Arch):
    name: Literal["dummy"]
    scale: params.Number  # the user vectors' fixed factor


class Dummy(nn.Module):
    """Score ``scale * <p_u, q_i>``."""

    def __init__(self, n_users: int, n_items: int, embed_dim: int, scale: float) -> None:
        super().__init__()
        self.user, self.item = nn.Embedding(n_users, embed_dim), nn.Embedding(n_items, embed_dim)
        self.scale = scale

    def tables(self) -> tuple[nn.Embedding, nn.Embedding]:
        return self.user, self.item

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale * self.user.weight, self.item.weight  # (U, D), (I, D)

    def sparse_macs(self) -> int:
        return 0


def build_dummy(arch: DummyArch, c: cf.CfContext) -> nn.Module:
    return Dummy(c.n_users, c.n_items, c.embed_dim, arch.scale)


@pytest.fixture()
def with_dummy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cf.MODELS.entries, "dummy", Entry(DummyArch, build_dummy))


def with_models(teacher: dict[str, object], student: dict[str, object]) -> params.Params:
    small = {"lr": 0.02, "batch_size": 128, "epochs": 4, "patience": 2, "eval_every": 2}
    train_cf = P.train.cf.model_copy(update={"embed_dim": 8, "model": params.ModelBlock(**teacher),
                                             "optim": P.train.cf.optim.model_copy(update=small)})
    block = P.distill.cf.student.model_copy(update={
        "model": params.ModelBlock(**student), "optim": P.distill.cf.student.optim.model_copy(update=small)})
    return P.model_copy(update={
        "train": P.train.model_copy(update={"cf": train_cf}),
        "distill": P.distill.model_copy(update={"cf": P.distill.cf.model_copy(update={"student": block})})})


@pytest.mark.usefixtures("with_dummy")
def test_a_registered_model_trains_as_meta_and_main_model_and_rebuilds(tmp_path: Path) -> None:
    splits, p = synthetic_splits(3), with_models(DUMMY, {"name": "mf"})
    meta = cf.run_cf("teacher", p, splits=splits, seed=0, progress=False)
    assert meta.checkpoint.arch == DUMMY and meta.record.cost.macs_method == "flop_counter"
    write_arm(meta, tmp_path)
    teacher = cf.load_cf_teacher(tmp_path / "model.pt", splits)
    state, _ = read_checkpoint(tmp_path / "model.pt")
    torch.testing.assert_close(teacher.user, 2.0 * state["user.weight"], rtol=0, atol=0)
    student = cf.run_cf("student", p, splits=splits, seed=0, teacher=teacher, progress=False)
    assert student.checkpoint.extra["teacher"]["arch"] == DUMMY
    alone = cf.run_cf("alone", with_models({"name": "mf"}, DUMMY), splits=splits, seed=0, progress=False)
    assert alone.checkpoint.arch == DUMMY and alone.record.metrics["test/ndcg@20"] > 0


def test_an_unregistered_name_is_a_params_error() -> None:
    p = with_models({"name": "dummy", "scale": 2.0}, {"name": "mf"})
    with pytest.raises(params.ParamsError, match="train.cf.model.name = 'dummy' is invalid: "
                                                 "expected one of 'lightgcn', 'mf'"):
        cf.architecture("teacher", p)
