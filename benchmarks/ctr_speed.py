"""Speed of the ctr models on the real ctr split (a measurement, not a test).

For each device (CPU at each ``--threads``, and CUDA when available) and each model
(CrossNet, CIN, DAGFM outer/inner trained on BCE, and the DAGFM distillation phase on a
frozen teacher), trains ``--epochs`` epochs through the same code the stages run and
reports wall seconds per epoch (training only, no validation), process CPU seconds per
epoch (robust to other jobs sharing the cores; includes one validation), training
samples/s, and inference samples/s (one forward pass over 10,000 rows, median of 7).
Writes benchmarks/results/ctr_speed-<machine>.json.

Usage (from the repository root): python benchmarks/ctr_speed.py [--threads 1 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from recdistill import ctr, params
from recdistill.data.ctr_features import CtrFeatures, load_features

import machine  # benchmarks/machine.py (run from the repository root)
from recdistill.train import configure_cpu, seed_everything

MODELS = ("crossnet", "cin", "dagfm-outer", "dagfm-inner", "dagfm-distill")
# the teacher train.ctr.model does not pick is timed with this block (params.yaml's comment for cin)
OTHER_TEACHER: dict[str, dict[str, Any]] = {
    "crossnet": {"name": "crossnet", "cross": "matrix", "depth": 3, "mlp_dims": []},
    "cin": {"name": "cin", "depth": 3, "layer_size": 16, "mlp_dims": []}}


def build(name: str, p: params.Params, f: CtrFeatures) -> torch.nn.Module:
    """The model ``name`` through the track's registries, sized by ``train.ctr.embed_dim``."""
    context = ctr.CtrContext(f.cardinalities, f.n_multi, p.train.ctr.embed_dim)
    if name in ("crossnet", "cin"):
        block = p.train.ctr.model if p.train.ctr.model.name == name else OTHER_TEACHER[name]
        return ctr.TEACHERS.build(ctr.TEACHERS.arch(block, "train.ctr.model"), context)
    kind = "outer" if name == "dagfm-distill" else name.split("-")[1]
    block = {**p.distill.ctr.student.model.model_dump(), "name": "dagfm", "type": kind}
    return ctr.STUDENTS.build(ctr.STUDENTS.arch(block, "distill.ctr.student.model"), context)


def with_budget(p: params.Params, epochs: int) -> params.Params:
    """``p`` with ``epochs`` epochs (and as much patience) for the teacher and the student."""
    def budget(optim: params.Optim) -> params.Optim:
        return optim.model_copy(update={"epochs": epochs, "patience": epochs})
    student = p.distill.ctr.student.model_copy(update={"optim": budget(p.distill.ctr.student.optim)})
    return p.model_copy(update={
        "train": p.train.model_copy(update={"ctr": p.train.ctr.model_copy(
            update={"optim": budget(p.train.ctr.optim)})}),
        "distill": p.distill.model_copy(update={"ctr": p.distill.ctr.model_copy(update={"student": student})})})


def measure(name: str, p: params.Params, f: CtrFeatures, epochs: int) -> dict[str, Any]:
    device = f.train.ids.device
    p = with_budget(p, epochs)
    generator = seed_everything(0, device)
    model = build(name, p, f).to(device)
    cpu_start = time.process_time()
    if name == "dagfm-distill":
        teacher = build("crossnet", p, f).to(device)  # untrained: the cost is the same
        kd = ctr.distill_student(model, teacher, f, p, generator=generator)
        seconds = kd.distill.seconds_per_epoch  # phase 1: interaction layers on frozen embeddings
    else:
        optim = p.train.ctr.optim if name in ("crossnet", "cin") else p.distill.ctr.student.optim
        seconds = ctr.train_bce(model, f, optim, generator=generator, name=name, p=p).seconds_per_epoch
    cpu_per_epoch = (time.process_time() - cpu_start) / epochs  # includes validation
    cost = ctr.measure_cost(model, f.test)
    return {"model": name, "seconds_per_epoch": round(seconds, 4),
            "cpu_seconds_per_epoch": round(cpu_per_epoch, 4),
            "train_samples_per_s": round(len(f.train) / seconds),
            "infer_samples_per_s": round(ctr.LATENCY_ROWS / cost.latency_ms * 1000),
            "latency_ms_per_10k": cost.latency_ms, "params": cost.params,
            "macs_per_example": cost.macs_per_example}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/ctr"))
    parser.add_argument("--canonical", type=Path, default=Path("data/canonical"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = params.load("params.yaml")
    features = load_features(args.prepared, args.canonical)
    setups = [("cpu", t) for t in args.threads] + ([("cuda", 0)] if torch.cuda.is_available() else [])
    rows = []
    for device, threads in setups:
        configure_cpu(threads)
        f = features.to(device)
        for name in args.models:
            row = {"device": device, "threads": threads or None, **measure(name, p, f, args.epochs)}
            rows.append(row)
            print(f"{device:4s} {threads or '-':>2} {name:14s} {row['seconds_per_epoch']:7.3f} s/epoch "
                  f"{row['cpu_seconds_per_epoch']:7.3f} cpu-s/epoch {row['train_samples_per_s']:>9,} "
                  f"train/s {row['infer_samples_per_s']:>10,} infer/s {row['macs_per_example']:>7,} "
                  f"MACs {row['params']:>8,} params", flush=True)
    path = machine.save("ctr_speed", {"epochs_timed": args.epochs, "train_rows": len(features.train),
                                      "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
