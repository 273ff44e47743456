"""Benchmark every model: run each track's speed script (train/inference throughput,
seconds per epoch, latency) on the real prepared data, then regenerate RESULTS.md.

    python benchmarks/throughput.py             # all tracks, 1 and 2 CPU threads (and the GPU if present)
    python benchmarks/throughput.py --tracks cf seq

Each track script writes benchmarks/results/<track>_speed-<machine>.json; needs
`dvc repro prepare neighbors` (data/prepared, data/neighbors) first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from results import regenerate

HERE = Path(__file__).resolve().parent
TRACKS = ("coldstart", "ctr", "cf", "seq")  # benchmarks/<track>_speed.py
THREADS = ["--threads", "1", "2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", nargs="+", choices=TRACKS, default=list(TRACKS))
    args = parser.parse_args()
    for track in args.tracks:
        print(f"== {track}", flush=True)
        subprocess.run([sys.executable, str(HERE / f"{track}_speed.py"), *THREADS],
                       cwd=HERE.parent, check=True)
    regenerate()


if __name__ == "__main__":
    main()
