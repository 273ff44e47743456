"""Speed of the cf track on real data: seconds per training epoch and samples/s for LightGCN
(meta), MF with cross fusion (distill) and MF alone, plus full-ranking evaluation of all
users, on CPU and on CUDA when available. Not a test: prints a table and writes JSON
(benchmarks/results/cf_speed-<machine>.json).

Usage: python benchmarks/cf_speed.py [--data data/prepared/cf] [--epochs 5] [--threads 1 2]
       [--params params.yaml]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from recdistill import cf, params
from recdistill.data.interactions import load_cf_splits
from recdistill.models.registry import Arch
from recdistill.params import PeriodicOptim
from recdistill.transfer.cross_fusion import CrossFusion
from recdistill.train import configure_cpu, median_ms

import machine  # benchmarks/machine.py (run from the repository root)


def bench_device(p: params.Params, data: Path, device: torch.device, epochs: int) -> list[dict[str, Any]]:
    splits = load_cf_splits(data, device=device)
    ks = tuple(p.evaluate.ks)
    rows: list[dict[str, Any]] = []
    monitor = cf.selection(p)
    meta_emb: tuple[torch.Tensor, torch.Tensor] | None = None
    context = cf.CfContext(splits.train, p.train.cf.embed_dim)
    jobs: list[tuple[str, Arch, PeriodicOptim]] = [
        ("lightgcn (meta)", cf.architecture("teacher", p), p.train.cf.optim),
        ("mf + cross fusion (distill)", cf.architecture("student", p), p.distill.cf.student.optim),
        ("mf (alone)", cf.architecture("alone", p), p.distill.cf.student.optim)]
    for name, arch, optim in jobs:
        optim = optim.model_copy(update={"epochs": epochs, "eval_every": epochs, "patience": 1})
        torch.manual_seed(0)
        model = cf.build_model(arch, context)
        transfer = None
        if name.startswith("mf + cross"):
            assert meta_emb is not None
            transfer = CrossFusion(*meta_emb, p.distill.cf.lambda1, p.distill.cf.lambda2)
        cpu_start = time.process_time()  # CPU seconds: robust to other jobs sharing the cores
        result = cf.train_cf(model, splits, optim, monitor=monitor, name=name, transfer=transfer,
                             generator=torch.Generator(device=device).manual_seed(0))
        cpu_per_epoch = (time.process_time() - cpu_start) / epochs  # includes one validation
        if name.startswith("lightgcn"):
            assert isinstance(model, cf.CfModel), type(model)
            with torch.no_grad():
                meta_emb = model.embeddings()  # (U, D), (I, D): the meta model's fixed embeddings
        cf.evaluate(model, splits, "test", ks)  # warm-up
        start = time.perf_counter()
        cf.evaluate(model, splits, "test", ks)
        if device.type == "cuda":
            torch.cuda.synchronize()
        eval_s = time.perf_counter() - start
        cost = cf.measure_cost(model, splits)
        rows.append({"model": name, "device": device.type, "batch_size": optim.batch_size,
                     "seconds_per_epoch": result.seconds_per_epoch, "cpu_seconds_per_epoch": cpu_per_epoch,
                     "samples_per_s": len(splits.train) / result.seconds_per_epoch,
                     "full_eval_s": eval_s, "score_all_users_ms": median_ms(cf.scoring_pass(model, splits, max(ks)), device),
                     "params": cost.params})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared/cf"),
                        help="folder with the cf train/valid/test Parquet files")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per model")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = params.load(args.params)
    setups = [(torch.device("cpu"), t) for t in args.threads] + (
        [(torch.device("cuda"), 0)] if torch.cuda.is_available() else [])
    rows = []
    for device, threads in setups:
        configure_cpu(threads)
        rows += [{**row, "threads": threads or None} for row in bench_device(p, args.data, device, args.epochs)]
    header = (f"{'model':30} {'device':6} {'threads':>7} {'s/epoch':>8} {'cpu s/ep':>8} {'samples/s':>10} "
              f"{'eval s':>7} {'score ms':>9}")
    print(header)
    for r in rows:
        print(f"{r['model']:30} {r['device']:6} {r['threads'] or '-':>7} {r['seconds_per_epoch']:8.3f} "
              f"{r['cpu_seconds_per_epoch']:8.3f} {r['samples_per_s']:10.0f} "
              f"{r['full_eval_s']:7.3f} {r['score_all_users_ms']:9.2f}")
    path = machine.save("cf_speed", {"epochs_timed": args.epochs, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
