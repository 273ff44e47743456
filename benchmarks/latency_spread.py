"""Run-to-run spread of the latency ratios: run each ``<track>-latency`` stage several times
(the command dvc.yaml gives it, output to a temporary file) and report, per model, the range
of its median ms and of its ratio to the teacher over the runs.

    python benchmarks/latency_spread.py [--runs 5] [--tracks ctr cf seq]

Needs the trained checkpoints (`dvc repro`). Writes benchmarks/results/latency_spread-<machine>.json
and regenerates RESULTS.md; MLflow runs go to a temporary store.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

import machine  # benchmarks/machine.py (run from the repository root)
from results import regenerate

TRACKS = ("ctr", "cf", "seq")


def stage_argv(track: str, out: Path) -> list[str]:
    """The stage's command from dvc.yaml, with the first seed filled in and ``--out`` redirected."""
    seed = yaml.safe_load(Path("params.yaml").read_text())["seeds"][0]
    cmd = yaml.safe_load(Path("dvc.yaml").read_text())["stages"][f"{track}-latency"]["cmd"]
    argv = shlex.split(cmd.replace("${seeds[0]}", str(seed)))
    argv[argv.index("--out") + 1] = str(out)
    return [sys.executable if arg == "python" else arg for arg in argv]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="stage runs per track")
    parser.add_argument("--tracks", nargs="+", choices=TRACKS, default=list(TRACKS))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        for track in args.tracks:
            tables = []
            for run in range(args.runs):
                out = Path(tmp) / f"{track}-{run}.json"
                subprocess.run(stage_argv(track, out), check=True, env=env, capture_output=True)
                tables.append(json.loads(out.read_text()))
            for model in tables[0]["models"]:
                ms = [t["models"][model]["median_ms"] for t in tables]
                ratios = [t["models"][model]["ratio"] for t in tables]
                rows.append({"track": track, "model": model, "unit": tables[0]["unit"], "runs": args.runs,
                             "median_ms_min": min(ms), "median_ms_max": max(ms),
                             "ratio_min": min(ratios), "ratio_max": max(ratios),
                             "ratio_spread_pct": 100 * (max(ratios) - min(ratios)) / min(ratios)})
                print(rows[-1], flush=True)
    machine.save("latency_spread", {"command": "python benchmarks/latency_spread.py",
                                    "rows": rows})
    regenerate()


if __name__ == "__main__":
    main()
