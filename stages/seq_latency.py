"""Time every trained seq model side by side in this one process: each scores every item
for all users' test inputs.

Every round calls each model once, in a shuffled order; a model's latency is its median over
the rounds and its ratio to the teacher the median of the per-round ratios
(recdistill.latency). The folder names (``models/seq/distilled-s0``) name the models.

Out: OUT (metrics/latency/seq.json), and the timings in the stage's MLflow run.

Usage: seq_latency.py CHECKPOINT_DIR... --rounds N --out metrics/latency/seq.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from recdistill import cli, seq
from recdistill.data.sequences import load_seq_split
from recdistill.latency_stage import Passes, model_name, stage_main
from recdistill.params import Params


def passes(folders: list[Path], args: argparse.Namespace, p: Params, device: torch.device) -> Passes:
    n_items = len(pd.read_parquet(args.canonical / "items.parquet", columns=["item"]))
    split = load_seq_split(args.prepared, n_items=n_items, max_len=p.data.seq.max_len, device=device)
    found = {}
    for folder in folders:
        scorer, meta = seq.load_scorer(folder / "model.pt", split, device)
        found[model_name(folder)] = meta, seq.scoring_pass(scorer, split)
    return found


def main(argv: list[str] | None = None) -> None:
    stage_main("seq", "all users", __doc__, passes, argv)


if __name__ == "__main__":
    cli.run(main)
