"""Speed of the seq track on real data: seconds per training epoch and training positions/s
for the SASRec teacher, the distilled student (soft targets over sampled candidates and over
all items) and the student alone, plus scoring every item for all users, on CPU and on CUDA
when available. Not a test: prints a table and writes JSON (benchmarks/results/).

Reference point (issue 7): a mainstream library's SASRec takes about 350 s per epoch on one
CPU thread on ML-100K; the target is at least 50x less (<= 7 s) on 2 cores.

Usage: python benchmarks/seq_speed.py [--data data/prepared/seq] [--items data/canonical/items.parquet]
       [--epochs 3] [--threads 1 2] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from recdistill import params, seq
from recdistill.cost import n_params
from recdistill.data.sequences import SeqSplit, load_seq_split
from recdistill.train import configure_cpu, median_ms

import machine  # benchmarks/machine.py (run from the repository root)

REFERENCE_S_PER_EPOCH = 350.0


def bench_device(p: params.Params, split: SeqSplit, device: torch.device, epochs: int) -> list[dict[str, Any]]:
    ks = tuple(p.evaluate.ks)
    positions = int((split.train[:, 1:] != 0).sum())  # training targets per epoch
    rows: list[dict[str, Any]] = []
    teacher: seq.SeqModel | None = None
    kd, student = p.distill.seq, p.distill.seq.student
    teacher_arch = seq.MODELS.arch(p.train.seq.model, "train.seq.model")
    student_arch = seq.MODELS.arch(student.model, "distill.seq.student.model")
    runs = [("teacher", teacher_arch, p.train.seq.optim, None), ("alone", student_arch, student.optim, None),
            ("distill (sampled)", student_arch, student.optim, kd.model_copy(update={"candidates": "sampled"})),
            ("distill (all items)", student_arch, student.optim, kd.model_copy(update={"candidates": "all"}))]
    for name, arch, optim, kd_params in runs:
        # fixed epoch count: validation only at the end, no early stop
        optim = optim.model_copy(update={"epochs": epochs, "eval_every": epochs, "patience": 1})
        start = time.perf_counter()
        module, fit = seq.train_model(split, arch, optim, seed=0, device=device, name=name, ks=ks,
                                      monitor=seq.monitor(p),
                                      loss=p.train.seq.loss if name == "teacher" else kd.loss,
                                      teacher=teacher if kd_params else None,
                                      kd=kd_params, amp=p.runtime.amp)
        total = time.perf_counter() - start
        model = seq.seq_model(module)
        if name == "teacher":
            teacher = model
        rows.append({"model": name, "device": device.type, "threads": torch.get_num_threads(),
                     "max_len": split.max_len, "batch_size": optim.batch_size,
                     "seconds_per_epoch": fit.seconds_per_epoch,
                     "positions_per_s": positions / fit.seconds_per_epoch,
                     "speedup_vs_350s": REFERENCE_S_PER_EPOCH / fit.seconds_per_epoch,
                     "run_s": total, "score_all_users_ms": median_ms(seq.scoring_pass(model.score_last, split), device),
                     "params": n_params(module)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared/seq"))
    parser.add_argument("--items", type=Path, default=Path("data/canonical/items.parquet"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per model")
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch CPU thread counts to time, one pass each (0: torch's default)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = params.load(args.params)
    n_items = len(pd.read_parquet(args.items, columns=["item"]))
    runs = [(torch.device("cpu"), t) for t in args.threads]
    if torch.cuda.is_available():
        runs.append((torch.device("cuda"), args.threads[-1]))
    rows = []
    for device, threads in runs:
        configure_cpu(threads)
        split = load_seq_split(args.data, n_items=n_items, max_len=p.data.seq.max_len, device=device)
        rows += bench_device(p, split, device, args.epochs)
    print(f"{'model':22} {'device':6} {'thr':>3} {'s/epoch':>8} {'pos/s':>9} {'x350s':>6} {'score ms':>9} {'params':>8}")
    for r in rows:
        print(f"{r['model']:22} {r['device']:6} {r['threads']:3d} {r['seconds_per_epoch']:8.3f} "
              f"{r['positions_per_s']:9.0f} {r['speedup_vs_350s']:6.0f} {r['score_all_users_ms']:9.2f} "
              f"{r['params']:8d}")
    path = machine.save("seq_speed", {"epochs_timed": args.epochs, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
