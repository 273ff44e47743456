"""Per-epoch time of a training stage when two queued DVC experiments run at once (a
measurement, not a test): ``runtime.threads: auto`` against a fixed 2 threads.

Copies the repository into a temp folder (benchmarks/pipeline.py's ``copy_repo``) with an
offline synthetic dataset of ML-100K's shape (943 users, 1,682 items, ~100k ratings;
tests/synthetic.py), commits it and reproduces the data stages. Then, for each thread
setting, queues experiments of one training stage (``ctr-alone@0``: DAGFM, a fixed budget of
``--epochs`` epochs, no early stop; each experiment a slightly different learning rate, so
none is restored from DVC's run cache) and runs them N at a time with DVC's queue (``dvc
exp run --run-all -j N``: the workers of ``dvc queue start -j N``, followed until done): one
experiment alone (N = 1), then two at once (N = 2). The epoch times are the ``train/seconds``
each epoch logged to the copy's MLflow store (the experiments' temporary copies log to the
main store); for a pair only the epochs that ended while both jobs were training count. The
thread counts are read from the stages' logs (``torch threads: N`` lines, auto only). The
settings run in interleaved rounds (``--repeats``), and the 1-minute load average before each
is recorded: the machine may be shared, and other work there slows every setting.
Prints a table and writes benchmarks/results/queue_threads-<machine>.json (RESULTS.md:
``python benchmarks/results.py``).

Usage (from the repository root): python benchmarks/queue_threads.py [--epochs 40] [--repeats 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

import machine  # benchmarks/machine.py (run from the repository root)
from pipeline import REPO, copy_repo

sys.path.insert(0, str(REPO / "tests"))
import synthetic  # type: ignore[import-not-found]  # noqa: E402  (tests/synthetic.py)

STAGE = "ctr-alone@0"
OPTIM = "distill.ctr.student.optim"  # what ctr-alone trains with
SETTINGS = ("auto", "2")  # runtime.threads
WAIT_S = 1800


def _env(repo: Path) -> dict[str, str]:
    """The copy's library first (the editable install would import this checkout's, which
    may have changed since the copy was made), and MLflow's default store: the copy's."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONPATH": str(repo / "src"), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _sh(repo: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=repo, env=_env(repo), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def build(repo: Path) -> None:
    """The copy, with the synthetic dataset as its download source and one seed, committed,
    its data stages reproduced."""
    repo.mkdir(parents=True)
    copy_repo(repo)
    data = synthetic.make(n_users=943, n_items=1682, per_user=(20, 193), seed=0)
    wheel = synthetic.write_recbole(data, repo.parent / "recbole-synthetic.whl")
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["seeds"] = [0]
    p["download"]["sources"] = [{"name": "synthetic", "kind": "file", "url": str(wheel),
                                 "sha256": synthetic.sha256(wheel)}]
    p["download"]["expect"] = data.counts
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _sh(repo, "dvc", "repro", "prepare")
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-qm", "bench")


def run_queue(repo: Path, names: list[str], threads: str, epochs: int, lrs: Iterator[float]) -> None:
    """Queue one experiment per name and run them all at once, until each has succeeded."""
    for name in names:
        _sh(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", f"runtime.threads={threads}",
            "-S", f"{OPTIM}.epochs={epochs}", "-S", f"{OPTIM}.patience={epochs}",
            "-S", f"{OPTIM}.lr={next(lrs):.7f}", STAGE)
    # --run-all -j N: `dvc queue start -j N`'s workers, followed until every experiment ended,
    # in one process (polling `dvc queue status` would load the 2 cores being measured)
    with open(repo.parent / "queue.log", "a") as log:  # workers keep inherited pipes open
        subprocess.run(["dvc", "exp", "run", "--run-all", "-j", str(len(names))], cwd=repo,
                       env=_env(repo), stdout=log, stderr=subprocess.STDOUT, timeout=WAIT_S)
    status = _queue_status(repo)
    if any(status.get(name) != "Success" for name in names):
        raise SystemExit(f"queued experiments did not all succeed: {status}")


def _queue_status(repo: Path) -> dict[str, str]:
    """``dvc queue status`` as {experiment name: status} (rows: task, name, created, status)."""
    rows = [line.split() for line in _sh(repo, "dvc", "queue", "status").splitlines()]
    return {row[1]: row[-1] for row in rows if len(row) > 3 and row[0] != "Task"}


def epoch_seconds(repo: Path, names: list[str]) -> list[float]:
    """The ``train/seconds`` of every epoch of the experiments' runs of STAGE; for several
    experiments only the epochs that ended while all of them were training."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recdistill")
    assert experiment is not None
    histories = []
    for name in names:
        [run] = client.search_runs([experiment.experiment_id],
                                   f"tags.`dvc.exp` = '{name}' and attributes.run_name = '{STAGE}'")
        histories.append(client.get_metric_history(run.info.run_id, "train/seconds"))
    start = max(h[0].timestamp for h in histories)  # the end of every job's first epoch
    end = min(h[-1].timestamp for h in histories)  # ... and of the first job's last one
    return [m.value for h in histories for m in h if start <= m.timestamp <= end]


def threads_seen(repo: Path, name: str) -> str:
    """The thread counts ``runtime.threads: auto`` set in an experiment's stage, in order."""
    return " ".join(re.findall(r"torch threads: (\d+)", _sh(repo, "dvc", "queue", "logs", name))) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40, help="epochs per experiment")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of every setting, interleaved")
    parser.add_argument("--keep", type=Path, help="build the copy here and keep it")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="queue-threads-"))
    repo = base / "repo"
    print(f"building {repo} ...", flush=True)
    build(repo)
    lrs = (0.003 + 1e-6 * k for k in itertools.count())
    seconds: dict[tuple[str, int], list[float]] = {}
    seen: dict[tuple[str, int], list[str]] = {}
    loads: dict[tuple[str, int], list[float]] = {}
    for repeat, threads, jobs in itertools.product(range(args.repeats), SETTINGS, (1, 2)):
        names = [f"t{threads}-j{jobs}-r{repeat}-{k}" for k in range(jobs)]
        loads.setdefault((threads, jobs), []).append(os.getloadavg()[0])  # other work on the machine
        run_queue(repo, names, threads, args.epochs, lrs)
        seconds.setdefault((threads, jobs), []).extend(epoch_seconds(repo, names))
        seen.setdefault((threads, jobs), []).extend(threads_seen(repo, name) for name in names)
        print(threads, jobs, repeat, f"{statistics.median(seconds[threads, jobs]):.3f} s/epoch", flush=True)
    rows: list[dict[str, Any]] = []
    for (threads, jobs), values in seconds.items():
        median = statistics.median(values)
        rows.append({"runtime.threads": threads, "jobs": jobs, "epochs_timed": len(values),
                     "median_s_per_epoch": round(median, 4),
                     "p90_s_per_epoch": round(statistics.quantiles(values, n=10)[-1], 4),
                     "vs_lone_run": round(median / statistics.median(seconds[threads, 1]), 2),
                     "threads_set_per_job": " | ".join(seen[threads, jobs]),
                     "load_1min_before": " ".join(f"{v:.1f}" for v in loads[threads, jobs])})
        print(rows[-1])
    path = machine.save("queue_threads", {
        "command": f"python benchmarks/queue_threads.py --epochs {args.epochs} --repeats {args.repeats}",
        "stage": STAGE, "data": "synthetic, ML-100K-shaped (tests/synthetic.py)", "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
