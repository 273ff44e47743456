"""Training and evaluation of AGNN on one coldstart scenario (warm, ICS or UCS).

All data lives as tensors on the device: an epoch is a permutation of the train ratings cut
into batches, and each batch draws fresh neighbors for every user and every item from the
k-NN lists with one ``torch.multinomial`` call per node type (without replacement, by the
lists' weights); the model encodes each distinct node of the batch once. No Python runs
per row or per node. Validation and test use every listed neighbor weighted by its sampling
probability, so they are deterministic. That is not exactly the expectation of the training
draw: drawn without replacement, a neighbor's chance to be in the draw grows less than its
weight, so the draw flattens the weights. Evaluating with the draw's expected weights
instead (512 Monte-Carlo draws, tried on the CPU machine) moved the 3-seed test RMSE by at
most 0.0004 in each scenario, well inside the seed spread, so the simpler form stays. Cold
nodes (no train ratings) get their preference embedding from the eVAE. Early stopping
watches ``valid/<evaluate.select.coldstart>`` (``rmse`` or ``mae``); test metrics are
computed once, from the selected state.

AGNN is the track's one trained model, built by name from :data:`TEACHERS`; its arm has the
role ``teacher`` (no student learns from it) and :func:`run_coldstart` returns it as an
:class:`recdistill.arm.ArmResult`.

Shapes: P ratings, B batch, N nodes of one type, K listed neighbors, M sampled neighbors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from matplotlib.figure import Figure

from recdistill import metrics
from recdistill.arm import ArmRecord, ArmResult, CheckpointMeta, Cost, Role
from recdistill.coldstart import ARMS, RATING_RANGE
from recdistill.coldstart.graphs import ScenarioGraph, SideGraph
from recdistill.cost import count_macs, n_params
from recdistill.models.agnn import AGNN, AgnnArch
from recdistill.models.multihot import MultiHot, SparseRowSum
from recdistill.models.registry import Arch, Entry, Registry
from recdistill.params import AgnnParams, ParamsError
from recdistill.train import fit, seed_everything
from recdistill.train.device import Amp

__all__ = ["ROLE", "SELECTABLE", "AgnnContext", "TEACHERS", "Ratings", "NeighborSampler",
           "build_agnn", "monitor", "graph_shape", "evaluate", "scoring_macs", "run_coldstart",
           "curve_figure"]

ROLE: Role = "teacher"  # AGNN's arm: the track's trained model
SELECTABLE = ("rmse", "mae")  # what evaluate.select.coldstart may name; both are minimised


@dataclass(frozen=True)
class Ratings:
    users: torch.Tensor  # (P,) int64
    items: torch.Tensor  # (P,) int64
    ratings: torch.Tensor  # (P,) float32

    @classmethod
    def from_frame(cls, df: pd.DataFrame, device: torch.device | str = "cpu") -> Ratings:
        def t(col: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.array(df[col].to_numpy()), device=device).to(dtype)
        return cls(t("user", torch.int64), t("item", torch.int64), t("rating", torch.float32))

    def __len__(self) -> int:
        return len(self.ratings)


class NeighborSampler:
    """The k-NN lists of one node type on the device, sampled per batch."""

    def __init__(self, side: SideGraph, n_sample: int, device: torch.device | str) -> None:
        self.ids = torch.as_tensor(side.neighbors, device=device)  # (N, K)
        self.weights = torch.as_tensor(side.weights, device=device)  # (N, K)
        self.n_sample = n_sample

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_sample`` neighbors of every node (N, M) by weight, without replacement, with
        uniform weights; when the lists hold no more than ``n_sample``, all, with their weights."""
        if self.n_sample >= self.ids.shape[1]:
            return self.full()  # (N, K), (N, K)
        pos = torch.multinomial(self.weights, self.n_sample, replacement=False, generator=generator)  # (N, M)
        ids = torch.gather(self.ids, 1, pos)  # (N, M)
        return ids, torch.full(ids.shape, 1.0 / self.n_sample, device=ids.device)  # (N, M)

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All listed neighbors of every node with their weights: (N, K), (N, K)."""
        return self.ids, self.weights


@dataclass(frozen=True)
class AgnnContext:
    """What an AGNN is built for: the scenario's graph (attributes, which nodes have train
    ratings) and the device its attribute matrices live on."""

    graph: ScenarioGraph
    device: torch.device


def _multi_hot(side: SideGraph, min_warm: int, device: torch.device | str) -> MultiHot:
    """The side's attributes as a MultiHot, keeping values held by >= ``min_warm`` warm nodes.

    A value seen on fewer nodes with train ratings gets (almost) no gradient, so its
    embedding would be noise that only cold nodes carry.
    """
    held = np.asarray(side.attributes[side.warm].sum(axis=0)).ravel()  # (F,) warm holders per value
    m = sp.csr_matrix(side.attributes[:, held >= min_warm])
    return MultiHot(torch.as_tensor(m.indptr.astype(np.int64), device=device),
                    torch.as_tensor(m.indices.astype(np.int64), device=device), int(m.shape[1]))


def build_agnn(arch: AgnnArch, context: AgnnContext) -> AGNN:
    """AGNN of ``arch`` over the graph's attributes, cold nodes = those without train ratings."""
    g, device = context.graph, context.device
    return AGNN(_multi_hot(g.users, arch.min_warm_holders, device),
                _multi_hot(g.items, arch.min_warm_holders, device),
                torch.as_tensor(~g.users.warm, device=device), torch.as_tensor(~g.items.warm, device=device),
                embed_dim=arch.embed_dim, hidden_dim=arch.hidden_dim).to(device)


TEACHERS: Registry[AgnnContext] = Registry("coldstart", {"agnn": Entry(AgnnArch, build_agnn)})


def monitor(select: str) -> str:
    """The early-stopping key of ``evaluate.select.coldstart`` (ParamsError if not computed here).

    >>> monitor("rmse")
    'valid/rmse'
    """
    if select not in SELECTABLE:
        raise ParamsError(f"params.yaml: evaluate.select.coldstart = {select!r} is invalid: "
                          f"expected one of {', '.join(repr(m) for m in SELECTABLE)}")
    return f"valid/{select}"


def graph_shape(graph: ScenarioGraph) -> dict[str, int]:
    """The data sizes a checkpoint is checked against: nodes and attribute values per type."""
    return {"users": len(graph.users.warm), "items": len(graph.items.warm),
            "user_values": len(graph.users.columns), "item_values": len(graph.items.columns)}


@torch.no_grad()
def evaluate(model: AGNN, users: NeighborSampler, items: NeighborSampler, data: Ratings
             ) -> torch.Tensor:
    """Clipped predictions (P,) for ``data`` from all weighted neighbors (model in eval mode)."""
    was_training = model.training
    model.eval()
    p, q, bu, bi = model.representations(*users.full(), *items.full())  # (U, D), (I, D), (U,), (I,)
    pred = model.predict(p[data.users], q[data.items], bu[data.users], bi[data.items])  # (P,)
    model.train(was_training)
    return pred.clamp(*RATING_RANGE)  # (P,)


def scoring_macs(model: AGNN, users: NeighborSampler, items: NeighborSampler, data: Ratings) -> int:
    """Multiply-adds per rating of :func:`evaluate` on ``data``: the representations of every
    user and item (computed once per pass, so shared by its P ratings) plus each rating's
    prediction.

    ``recdistill.cost.count_macs`` counts the whole pass, except that it counts the sparse
    attribute pooling ``x @ table`` (x the (N, F) multi-hot CSR, table (F, D); done twice per
    node type, for the attribute embeddings and their squares) as a dense N * F * D product.
    That part is replaced by its formula, nnz(x) * D per pooling.
    """
    total = count_macs(lambda: evaluate(model, users, items, data), examples=1)
    for side in (model.user, model.item):
        pooling = partial(SparseRowSum.apply, side.attr, side.attr_t, side.attribute)  # (N, D)
        dense = count_macs(pooling, examples=1)  # what the counter sees for one pooling
        sparse = side.attr.values().numel() * side.attribute.shape[1]  # nnz * D
        total += 2 * (sparse - dense)
    return round(total / max(len(data), 1))


def _batches(train: Ratings, users: NeighborSampler, items: NeighborSampler, batch_size: int,
             generator: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
    perm = torch.randperm(len(train), generator=generator, device=train.ratings.device)  # (P,)
    for start in range(0, len(perm), batch_size):
        idx = perm[start:start + batch_size]  # (B,)
        yield (train.users[idx], train.items[idx], train.ratings[idx],  # (B,) each
               *users.sample(generator), *items.sample(generator))  # (U, M) x 2, (I, M) x 2


def run_coldstart(graph: ScenarioGraph, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame,
                  arch: Arch, p: AgnnParams, *, select: str, seed: int, device: torch.device,
                  amp: Amp = "none", on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                  progress: bool = False) -> ArmResult:
    """Train AGNN ``arch`` (``TEACHERS.arch(p.model, ...)``) on ``train``, select on
    ``valid/<select>``, report ``test`` once."""
    assert isinstance(arch, AgnnArch), f"run_coldstart trains AGNN, not {arch.name!r}"
    key = monitor(select)
    generator = seed_everything(seed, device)
    tr, va, te = (Ratings.from_frame(df, device) for df in (train, valid, test))
    users = NeighborSampler(graph.users, arch.n_neighbors, device)
    items = NeighborSampler(graph.items, arch.n_neighbors, device)
    model = TEACHERS.build(arch, AgnnContext(graph, device))
    assert isinstance(model, AGNN), f"the coldstart registry built a {type(model).__name__}, not an AGNN"
    with torch.no_grad():
        model.mu.fill_(float(tr.ratings.mean()))
    o = p.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True)

    def loss_fn(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        u, i, r, un, uw, inb, iw = batch
        pred, recon, kl = model(u, i, un, uw, inb, iw)  # (B,) each
        return ((pred - r) ** 2).mean() + p.vae_weight * (recon.mean() + kl.mean())

    def validate() -> dict[str, float]:
        pred = evaluate(model, users, items, va)
        return {"valid/rmse": metrics.rmse(pred, va.ratings), "valid/mae": metrics.mae(pred, va.ratings)}

    fitted = fit(model, optimizer, batches=lambda e: _batches(tr, users, items, o.batch_size, generator),
                 loss_fn=loss_fn, validate=validate, epochs=o.epochs, monitor=key, mode="min",
                 patience=o.patience, name=f"agnn-{graph.scenario}", on_epoch=on_epoch,
                 progress=progress, amp=amp)
    pred = evaluate(model, users, items, te)
    scores = {**fitted.best, "test/rmse": metrics.rmse(pred, te.ratings),
              "test/mae": metrics.mae(pred, te.ratings)}
    predictions = test[["user", "item", "rating"]].reset_index(drop=True).assign(
        prediction=pred.cpu().numpy().astype(np.float32))
    cost = Cost(params=n_params(model), macs_per_example=scoring_macs(model, users, items, te),
                macs_method="formula", device=device.type)
    record = ArmRecord(track="coldstart", model=ARMS[ROLE], role=ROLE, seed=seed, scenario=graph.scenario,
                       metrics=scores, cost=cost, epochs=fitted.epochs_run, best_epoch=fitted.best_epoch,
                       stopped=fitted.stopped)
    checkpoint = CheckpointMeta(track="coldstart", role=ROLE, seed=seed, arch=arch.model_dump(),
                                shape=graph_shape(graph), selection=fitted.best,
                                best_epoch=fitted.best_epoch, extra={"scenario": graph.scenario})
    return ArmResult(record, model.state_dict(), checkpoint, fitted.history, predictions)


def curve_figure(history: list[dict[str, float]], title: str, key: str) -> Figure:
    """Train loss and the validation metric ``key`` per epoch (a matplotlib Figure, no pyplot state)."""
    fig = Figure(figsize=(8, 3))
    epochs = [row["epoch"] for row in history]
    for ax, name in zip(fig.subplots(1, 2), ("train/loss", key)):
        ax.plot(epochs, [row.get(name, float("nan")) for row in history], marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
    fig.suptitle(title)
    return fig
