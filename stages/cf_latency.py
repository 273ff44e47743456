"""Time every trained cf model side by side in this one process: each scores all users
(scores, masking of seen items, top-k).

Every round calls each model once, in a shuffled order; a model's latency is its median over
the rounds and its ratio to the teacher the median of the per-round ratios
(recdistill.latency). The folder names (``models/cf/distilled-s0``) name the models.

Out: OUT (metrics/latency/cf.json), and the timings in the stage's MLflow run.

Usage: cf_latency.py CHECKPOINT_DIR... --rounds N --out metrics/latency/cf.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from recdistill import cf, cli
from recdistill.data.interactions import load_cf_splits
from recdistill.latency_stage import Passes, model_name, stage_main
from recdistill.params import Params


def passes(folders: list[Path], args: argparse.Namespace, p: Params, device: torch.device) -> Passes:
    splits = load_cf_splits(args.prepared, device=device)
    found = {}
    for folder in folders:
        model, meta = cf.load_cf_model(folder / "model.pt", splits)
        found[model_name(folder)] = meta, cf.scoring_pass(model, splits, max(p.evaluate.ks))
    return found


def main(argv: list[str] | None = None) -> None:
    stage_main("cf", "all users", __doc__, passes, argv)


if __name__ == "__main__":
    cli.run(main)
