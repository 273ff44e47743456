"""A small training stage built from the foundation pieces, for kill and NaN tests.

It trains a biased matrix factorisation on the synthetic ratings with recdistill.train.fit,
logs through tracking.stage_run, and writes OUT_DIR/{model.pt, history.json}
atomically plus a METRICS json, like a track stage. Hooks make faults land at a known moment:
``--progress FILE`` records "<pid> <epoch> <batch>" before each batch (and "<pid> writing"
inside the atomic write), ``--batch-sleep`` slows batches, ``--write-pause`` holds the
process inside the atomic write, ``--nan-at E:B`` turns the loss of epoch E, batch B into NaN.

    python tests/reliability/mini_stage.py OUT_DIR METRICS [--epochs 3] [--seed 0] ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for synthetic.py

import synthetic  # noqa: E402

from recdistill import tracking  # noqa: E402
from recdistill.io import atomic_path, write_json  # noqa: E402
from recdistill.train import fit, save_checkpoint, seed_everything  # noqa: E402

NAME = "mini-mf"


class BiasedMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.dropout = nn.Dropout(0.1)  # exercises the seeded default RNG
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.1)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.dropout(self.user(users)) * self.item(items)).sum(-1)  # (B,)
        return 3.5 + dot + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0]  # (B,)


def train(args: argparse.Namespace, on_epoch) -> tuple[nn.Module, object]:  # noqa: ANN001
    g = seed_everything(args.seed)
    data = synthetic.make()
    r = torch.as_tensor(data.ratings)  # (N, 4) user, item (1-based), rating, timestamp
    users, items, y = r[:, 0] - 1, r[:, 1] - 1, r[:, 2].float()
    perm = torch.randperm(len(r), generator=g)
    n_valid = len(r) // 10
    valid, fit_rows = perm[:n_valid], perm[n_valid:]
    model = BiasedMF(len(data.users), len(data.items), args.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    nan_at = tuple(int(x) for x in args.nan_at.split(":")) if args.nan_at else None
    state = {"epoch": 0, "batch": 0}

    def batches(epoch: int) -> list[torch.Tensor]:
        state["epoch"], state["batch"] = epoch, -1
        order = fit_rows[torch.randperm(len(fit_rows), generator=g)]
        return list(order.split(args.batch_size))

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        state["batch"] += 1
        if args.progress:
            Path(args.progress).write_text(f"{os.getpid()} {state['epoch']} {state['batch']}")
        if args.batch_sleep:
            time.sleep(args.batch_sleep)
        loss = ((model(users[idx], items[idx]) - y[idx]) ** 2).mean()
        if nan_at == (state["epoch"], state["batch"]):
            loss = loss * float("nan")
        return loss

    def validate() -> dict[str, float]:
        err = model(users[valid], items[valid]) - y[valid]
        return {"valid/rmse": float(err.pow(2).mean().sqrt())}

    result = fit(model, optimizer, batches=batches, loss_fn=loss_fn, validate=validate,
                 epochs=args.epochs, monitor="valid/rmse", mode="min", patience=args.epochs,
                 name=NAME, on_epoch=on_epoch, progress=False)
    return model, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batch-sleep", type=float, default=0.0)
    parser.add_argument("--write-pause", type=float, default=0.0)
    parser.add_argument("--nan-at", default="")
    parser.add_argument("--progress", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hyper = {"epochs": args.epochs, "dim": args.dim, "batch_size": args.batch_size}
    with tracking.stage_run("mini", str(args.seed), track="reliability", role="alone",
                            params={"mini": hyper}) as run:
        model, result = train(args, run.log_epoch)
        with atomic_path(args.out_dir) as tmp:
            tmp.mkdir(parents=True)
            save_checkpoint(tmp / "model.pt", model.state_dict(),
                            {"model": NAME, "seed": args.seed, "best_epoch": result.best_epoch})
            write_json(tmp / "history.json", result.history)
            if args.write_pause:
                if args.progress:
                    Path(args.progress).write_text(f"{os.getpid()} writing")
                time.sleep(args.write_pause)
        write_json(args.metrics, {"model": NAME, "seed": args.seed, "best_epoch": result.best_epoch,
                                  "metrics": result.best, "epochs": result.epochs_run})
        run.record_checkpoint(args.out_dir / "model.pt")
        run.log_metrics(result.best)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
