"""Speed of the coldstart track on real ML-100K (a measurement, not a test).

1. Neighbor building (``recdistill.coldstart.graphs.build_graph``) for every scenario in
   ``neighbors.scenarios``, on CPU: seconds per scenario and in total.
2. AGNN (params from ``train.agnn``) on each scenario: seconds per training epoch (training
   only, median over ``--epochs`` epochs after one warm-up epoch), training ratings/s, and
   the evaluation pass (all users and items with all their weighted neighbors, then the
   validation ratings; ``train.median_ms``: median of 5 passes after a warm-up), on CPU at
   each ``--threads`` and on CUDA when available.

Usage: python benchmarks/coldstart_speed.py [--threads 1 2] [--epochs 3] [--scenarios warm ics ucs]
Writes benchmarks/results/coldstart_speed-<machine>.json.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import machine  # benchmarks/machine.py (run from the repository root)
from recdistill import params
from recdistill.coldstart.graphs import ScenarioGraph, build_graph, graph_from_payload
from recdistill.coldstart.training import (TEACHERS, AgnnContext, NeighborSampler, Ratings, evaluate,
                                           run_coldstart)
from recdistill.models.agnn import AGNN, AgnnArch
from recdistill.train import configure_cpu, median_ms


def time_neighbors(p: params.Params, canonical: Path, prepared: Path) -> tuple[dict[str, Any], dict[str, ScenarioGraph]]:
    tables = {name: pd.read_parquet(canonical / f"{name}.parquet") for name in ("users", "items", "attributes")}
    seconds: dict[str, float] = {}
    graphs: dict[str, ScenarioGraph] = {}
    for scenario in p.neighbors.scenarios:
        train = pd.read_parquet(prepared / scenario / "train.parquet")
        start = time.perf_counter()
        payload = build_graph(scenario, train, tables["users"], tables["items"], tables["attributes"], p.neighbors)
        seconds[scenario] = round(time.perf_counter() - start, 3)
        graphs[scenario] = graph_from_payload(payload)
    return {"seconds": seconds, "total_seconds": round(sum(seconds.values()), 3)}, graphs


def time_agnn(p: params.Params, graph: ScenarioGraph, split: dict[str, pd.DataFrame], device: torch.device,
              epochs: int) -> dict[str, Any]:
    agnn = p.train.agnn
    hp = agnn.model_copy(update={"optim": agnn.optim.model_copy(update={"epochs": epochs + 1, "patience": epochs + 1})})
    arch = TEACHERS.arch(hp.model, "train.agnn.model")
    assert isinstance(arch, AgnnArch)
    result = run_coldstart(graph, split["train"], split["valid"], split["test"], arch, hp,
                           select=p.evaluate.select.coldstart, seed=0, device=device)
    per_epoch = statistics.median(row["train/seconds"] for row in result.history[1:])
    model = TEACHERS.build(arch, AgnnContext(graph, device))
    assert isinstance(model, AGNN)
    model.load_state_dict(result.state)
    users = NeighborSampler(graph.users, arch.n_neighbors, device)
    items = NeighborSampler(graph.items, arch.n_neighbors, device)
    valid = Ratings.from_frame(split["valid"], device)
    eval_ms = median_ms(lambda: evaluate(model, users, items, valid), device)
    return {"seconds_per_epoch": round(per_epoch, 4), "train_ratings_per_s": round(len(split["train"]) / per_epoch),
            "eval_seconds": round(eval_ms / 1000, 4), "params": result.record.cost.params,
            "batch_size": hp.optim.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canonical", type=Path, default=Path("data/canonical"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/coldstart"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--scenarios", nargs="+", default=None, help="default: neighbors.scenarios")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = params.load("params.yaml")
    configure_cpu(max(args.threads))
    neighbors, graphs = time_neighbors(p, args.canonical, args.prepared)
    print(f"neighbors (cpu, {torch.get_num_threads()} threads): {neighbors['seconds']} "
          f"total {neighbors['total_seconds']:.2f} s", flush=True)
    setups = [("cpu", t) for t in args.threads] + ([("cuda", 0)] if torch.cuda.is_available() else [])
    rows = []
    for device, threads in setups:
        configure_cpu(threads)
        for scenario in args.scenarios or p.neighbors.scenarios:
            split = {s: pd.read_parquet(args.prepared / scenario / f"{s}.parquet") for s in ("train", "valid", "test")}
            row = {"device": device, "threads": threads or None, "scenario": scenario,
                   **time_agnn(p, graphs[scenario], split, torch.device(device), args.epochs)}
            rows.append(row)
            print(f"{device:4s} {threads or '-':>2} agnn-{scenario:4s} {row['seconds_per_epoch']:7.3f} s/epoch "
                  f"{row['train_ratings_per_s']:>8,} ratings/s  eval {row['eval_seconds']:.3f} s "
                  f"(batch {row['batch_size']}, {row['params']:,} params)", flush=True)
    path = machine.save("coldstart_speed", {"neighbors": neighbors, "agnn": rows, "epochs": args.epochs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
