"""Benchmark the whole pipeline: `dvc repro` from a clean cache on real ML-100K.

Copies the repository (tracked and untracked-not-ignored files, no dvc.lock, no cache) into
a temp directory, runs `dvc repro` there, and times each stage from the moment DVC starts
it to the moment the next one starts; then times a no-op `dvc repro`. Prints a table and
writes benchmarks/results/pipeline-<machine>.json.

    python benchmarks/pipeline.py            # all stages, seeds from params.yaml
    python benchmarks/pipeline.py --keep DIR # keep the copy for inspection
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import save

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name == "dvc.lock" or name.startswith(("metrics/", "reports/", "plots/", "benchmarks/results")):
            continue
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def timed_repro(repo: Path) -> tuple[float, dict[str, float]]:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    start = time.perf_counter()
    stages: dict[str, float] = {}
    current, since = None, start
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if current:
                stages[current] = now - since
            current, since = line.split("'")[1], now
            print(f"  {line.strip()}", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro failed in {repo}")
    end = time.perf_counter()
    if current:
        stages[current] = end - since
    return end - start, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="recdistill-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_repo(work)
    total, stages = timed_repro(work)
    noop, rerun = timed_repro(work)
    assert not rerun, f"no-op repro reran {sorted(rerun)}"
    print(f"\n{'stage':<40} {'seconds':>8}")
    for name, seconds in stages.items():
        print(f"{name:<40} {seconds:8.1f}")
    print(f"{'whole pipeline (clean cache)':<40} {total:8.1f}\n{'no-op dvc repro':<40} {noop:8.2f}")
    path = save("pipeline", {"total_s": total, "noop_s": noop, "stages_s": stages,
                             "command": "python benchmarks/pipeline.py"})
    print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
