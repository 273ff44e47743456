"""Benchmark the whole pipeline: `dvc repro` from a clean cache on real ML-100K.

Copies the repository (tracked and untracked-not-ignored files, no dvc.lock, no cache) into
a temp directory, runs `dvc repro` there, and times each stage from the moment DVC starts
it to the moment the next one starts; then times a no-op `dvc repro`. Prints a table and
writes benchmarks/results/pipeline-<machine>.json and RESULTS.md.

    python benchmarks/pipeline.py            # all stages, seeds from params.yaml
    python benchmarks/pipeline.py --keep DIR # keep the copy for inspection
    python benchmarks/pipeline.py --in-place # time `dvc repro` in this checkout (its cache)
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
from results import regenerate

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


def timed_repro(repo: Path, *flags: str) -> tuple[float, dict[str, float]]:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI",
                                                              f"sqlite:///{repo / 'mlflow.db'}")}
    start = time.perf_counter()
    stages: dict[str, float] = {}
    current, since = None, start
    proc = subprocess.Popen(["dvc", "repro", *flags], cwd=repo, env=env, stdout=subprocess.PIPE,
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
    parser.add_argument("--force", action="store_true",
                        help="rerun every stage (dvc repro --force), ignoring DVC's caches")
    parser.add_argument("--in-place", action="store_true",
                        help="run in this checkout instead of a clean copy (reruns what is stale)")
    args = parser.parse_args()
    work = REPO if args.in_place else args.keep or Path(tempfile.mkdtemp(prefix="recdistill-bench-"))
    if not args.in_place:
        work.mkdir(parents=True, exist_ok=True)
        copy_repo(work)
    total, stages = timed_repro(work, *(["--force"] if args.force else []))
    noop, rerun = timed_repro(work)
    assert not rerun, f"no-op repro reran {sorted(rerun)}"
    print(f"\n{'stage':<40} {'seconds':>8}")
    for name, seconds in stages.items():
        print(f"{name:<40} {seconds:8.1f}")
    print(f"{'whole pipeline (clean cache)':<40} {total:8.1f}\n{'no-op dvc repro':<40} {noop:8.2f}")
    path = save("pipeline-in-place" if args.in_place else "pipeline",
                {"total_s": total, "noop_s": noop, "stages_s": stages,
                 "command": " ".join(["python benchmarks/pipeline.py",
                                      *(["--in-place"] if args.in_place else []),
                                      *(["--force"] if args.force else [])])})
    print(f"wrote {path}")
    regenerate()
    if not (args.keep or args.in_place):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
