"""Time every trained ctr model side by side in this one process: each scores 10,000 test
rows in one batch.

Every round calls each model once, in a shuffled order; a model's latency is its median over
the rounds and its ratio to the teacher the median of the per-round ratios
(recdistill.latency). The folder names (``models/ctr/distilled-s0``) name the models.

Out: OUT (metrics/latency/ctr.json), and the timings in the stage's MLflow run.

Usage: ctr_latency.py CHECKPOINT_DIR... --rounds N --out metrics/latency/ctr.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from recdistill import cli, ctr
from recdistill.data.ctr_features import load_features
from recdistill.latency_stage import Passes, model_name, stage_main
from recdistill.params import Params


def passes(folders: list[Path], args: argparse.Namespace, p: Params, device: torch.device) -> Passes:
    features = load_features(args.prepared, args.canonical).to(device)
    found = {}
    for folder in folders:
        model, meta = ctr.load_ctr_model(folder / "model.pt", features)
        found[model_name(folder)] = meta, ctr.scoring_pass(model, features.test)
    return found


def main(argv: list[str] | None = None) -> None:
    stage_main("ctr", "per 10k rows", __doc__, passes, argv)


if __name__ == "__main__":
    cli.run(main)
