"""Helpers of the reliability suite: run stage scripts as a user would, snapshot outputs,
read the MLflow store, and build a small synthetic workspace (no network).

Stage scripts run as subprocesses with ``OMP_NUM_THREADS=1`` and their own throwaway MLflow
store, so a failure is observed exactly as a user (or ``dvc repro``) sees it: the exit code,
the traceback's last exception line on stderr, and what is left on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STAGES = REPO / "stages"
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
WORKERS = 2  # subprocesses at once: the CI box has 2 cores

sys.path.insert(0, str(REPO / "tests"))
import synthetic  # noqa: E402


def stage_env(store: Path, **extra: str) -> dict[str, str]:
    """Environment of a stage subprocess: one CPU thread, its own MLflow store."""
    env = dict(os.environ)
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{store}", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                "PYTHONWARNINGS": "ignore"})
    env.update(extra)
    return env


def run(argv: Sequence[str | Path], cwd: Path, store: Path, timeout: float = 180,
        **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python <argv>`` in ``cwd``; never raises on a nonzero exit."""
    return subprocess.run([PYTHON, *map(str, argv)], cwd=cwd, env=stage_env(store, **env),
                          capture_output=True, text=True, timeout=timeout)


def run_many(jobs: Iterable[Callable[[], Any]], workers: int = WORKERS) -> list[Any]:
    """Run independent subprocess jobs two at a time; results in job order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: job(), list(jobs)))


def stage(name: str) -> Path:
    return STAGES / name


# ---------------------------------------------------------------- what the user sees
def qualified(cls: type) -> str:
    """The name a traceback prints for ``cls`` (``recdistill.params.ParamsError``, ``ValueError``)."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def error_message(proc: subprocess.CompletedProcess[str], cls: type) -> str:
    """The message of the uncaught ``cls`` in ``proc``'s traceback (may span lines)."""
    marker = qualified(cls) + ": "
    assert proc.returncode != 0, f"expected a failure, got exit 0:\n{proc.stderr[-3000:]}"
    at = proc.stderr.rfind(marker)
    assert at >= 0, f"no {qualified(cls)} in stderr (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stderr[at + len(marker):]


def assert_fails_with(proc: subprocess.CompletedProcess[str], cls: type, *needles: str) -> str:
    """Nonzero exit, an uncaught exception of exactly ``cls``, whose message names ``needles``."""
    message = error_message(proc, cls)
    # one clear error: no second exception raised while handling the first
    assert "During handling of the above exception" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in message, f"{needle!r} not in the {cls.__name__} message:\n{message[:2000]}"
    return message


# ---------------------------------------------------------------- disk state
def snapshot(root: Path) -> dict[str, tuple[str, int]] | None:
    """Every file and folder under ``root`` -> (sha256 or 'dir', mtime_ns); None if absent."""
    if not root.exists():
        return None
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    out = {}
    for path in paths:
        key = str(path.relative_to(root)) if root.is_dir() else path.name
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[key] = (digest, path.stat().st_mtime_ns)
    return out


def stray_temps(parent: Path) -> list[str]:
    """Temporaries of :func:`recdistill.io.atomic_path` (``.<name>.<random>.tmp``) in ``parent``."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if re.fullmatch(r"\..+\.tmp", p.name))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- MLflow store
_TEMPLATE: list[Path] = []
_TEMPLATE_LOCK = threading.Lock()


def seeded_store(path: Path) -> Path:
    """A copy of an initialised empty SQLite store at ``path`` (skips MLflow's ~0.6 s of
    schema migrations in every stage subprocess)."""
    with _TEMPLATE_LOCK:
        if not _TEMPLATE:
            template = Path(tempfile.mkdtemp(prefix="relkit-store-")) / "template.db"
            from mlflow.tracking import MlflowClient
            MlflowClient(f"sqlite:///{template}").search_experiments()
            _TEMPLATE.append(template)
    shutil.copyfile(_TEMPLATE[0], path)
    return path


def mlflow_runs(store: Path) -> list[Any]:
    """All runs of the ``recdistill`` experiment in a SQLite store ([] if there is none)."""
    if not store.exists():
        return []
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("recdistill")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=5000)


def run_status(store: Path) -> dict[str, list[str]]:
    """Run name -> statuses of the runs with that name, oldest first."""
    out: dict[str, list[str]] = {}
    for r in sorted(mlflow_runs(store), key=lambda r: r.info.start_time):
        out.setdefault(r.info.run_name, []).append(r.info.status)
    return out


# ---------------------------------------------------------------- params files
def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def tokens(path: str) -> list[str | int]:
    """``download.sources[0].sha256`` -> ``['download', 'sources', 0, 'sha256']``."""
    out: list[str | int] = []
    for part in path.split("."):
        name, *indices = re.split(r"\[(\d+)\]", part)
        if name:
            out.append(name)
        out += [int(i) for i in indices if i != ""]
    return out


def set_path(tree: Any, path: str, value: Any) -> None:
    """Set ``path`` in a nested dict/list, creating missing mappings on the way."""
    *parents, leaf = tokens(path)
    node = tree
    for key in parents:
        if isinstance(key, str) and key not in node:
            node[key] = {}
        node = node[key]
    node[leaf] = value


def set_within(tree: Any, path: str, **values: Any) -> int:
    """Set every key named in ``values`` found anywhere under ``path`` (``train.ctr``), however
    deep (``train.ctr.epochs`` or ``train.ctr.optim.epochs``); returns how many were set."""
    node = tree
    for key in tokens(path):
        node = node[key]
    count = 0
    stack = [node]
    while stack:
        here = stack.pop()
        if isinstance(here, dict):
            for key, value in here.items():
                if key in values:
                    here[key] = values[key]
                    count += 1
                else:
                    stack.append(value)
        elif isinstance(here, list):
            stack.extend(here)
    return count


def delete_path(tree: Any, path: str) -> None:
    *parents, leaf = tokens(path)
    node = tree
    for key in parents:
        node = node[key]
    del node[leaf]


def write_yaml(path: Path, tree: Any) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- synthetic workspace
def synthetic_params(source: Path, data: synthetic.Synthetic, *, epochs: int = 2) -> dict[str, Any]:
    """params.yaml for the synthetic dataset: one seed, a ``file`` source, tiny budgets."""
    p = repo_params()
    p["seeds"] = [0]
    p["runtime"] = {"device": "cpu", "amp": "none", "threads": 1}
    p["download"]["sources"] = [{"name": "synthetic", "kind": "file", "url": str(source),
                                 "sha256": synthetic.sha256(source)}]
    p["download"]["expect"] = data.counts
    for section in (p["train"], p["distill"]):
        _shrink(section, epochs)
    return p


def _shrink(tree: Any, epochs: int) -> None:
    if isinstance(tree, dict):
        for key in tree:
            if key == "epochs":
                tree[key] = epochs
            elif key in ("patience", "eval_every"):
                tree[key] = 1
            else:
                _shrink(tree[key], epochs)


def make_workspace(root: Path, store: Path, *, prepare: bool = True) -> Path:
    """``root`` with params.yaml, data/canonical (download stage) and data/prepared (prepare)."""
    root.mkdir(parents=True, exist_ok=True)
    data = synthetic.make()
    wheel = synthetic.write_recbole(data, root / "recbole-synthetic.whl")
    write_yaml(root / "params.yaml", synthetic_params(wheel, data))
    proc = run([stage("download.py"), "data/canonical"], root, store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if prepare:
        proc = run([stage("prepare.py"), "data/canonical", "data/prepared", "metrics/prepare.json"],
                   root, store)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    return dst
