"""MLflow conventions (ARCHITECTURE §7), in one place; the only module that imports mlflow.

``stage_run`` opens one run per stage execution, named ``<stage>@<item>``, tagged with the
stage, item, track, role, git commit, DVC experiment name, a hash of the params the stage
reads, the data manifest hash, the host and the process (pid, start time, and on Linux the
host/boot/pid-namespace it belongs to), and logs those params flattened with dots. The run
ends FINISHED on success, KILLED on Ctrl-C/SIGTERM and FAILED on any other error. A
SIGKILLed process cannot end its run; the next run of the same stage and item from the same
host, boot and pid namespace ends it KILLED once its process is gone.

Store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db`` with artifacts
under ``<repo>/mlartifacts`` (absolute, so ``dvc exp run --temp`` runs land in the same store).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

from recdistill.io import file_digest, write_json
from recdistill.params import section_dict

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402  (telemetry switches must be set before the import)
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

__all__ = ["StageRun", "stage_run", "repo_root", "tracking_uri", "flatten", "mlflow_key", "params_hash"]

log = logging.getLogger(__name__)
MANIFEST = Path("data/canonical/manifest.json")


def repo_root() -> Path:
    """The repository root: the nearest parent holding dvc.yaml (falls back to the cwd)."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values.

    >>> flatten({"distill": {"ctr": {"beta": 921.6, "student": {"depth": 3}}}})
    {'distill.ctr.beta': 921.6, 'distill.ctr.student.depth': 3}
    """
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = section_dict(obj)
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def mlflow_key(key: str) -> str:
    """MLflow metric names may not contain '@': ``test/ndcg@10`` -> ``test/ndcg_at_10``.

    >>> mlflow_key("valid/hr@10")
    'valid/hr_at_10'
    """
    return key.replace("@", "_at_")


def params_hash(params: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the flattened params, independent of key order."""
    blob = json.dumps(flatten(params), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _manifest_hash(root: Path) -> str:
    path = root / MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "none"


@dataclass
class StageRun:
    """A live MLflow run with the logging helpers stages use."""

    run_id: str
    experiment_id: str
    name: str
    tags: dict[str, str]
    client: MlflowClient
    interrupts: _Interrupts

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch metrics with ``step=epoch`` (keys through :func:`mlflow_key`)."""
        ts = int(time.time() * 1000)
        batch = [mlflow.entities.Metric(mlflow_key(k), float(v), ts, epoch) for k, v in metrics.items()]
        with self.interrupts.held():
            self.client.log_batch(self.run_id, metrics=batch)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Final metrics (``test/auc``, ...), logged once."""
        ts = int(time.time() * 1000)
        batch = [mlflow.entities.Metric(mlflow_key(k), float(v), ts, 0) for k, v in metrics.items()
                 if v is not None]
        with self.interrupts.held():
            self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        with self.interrupts.held():
            self.client.log_batch(self.run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with self.interrupts.held():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """A JSON artifact (history, model summary)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
            self.log_artifact(path)

    def log_figure(self, figure: Any, name: str) -> None:
        """A matplotlib figure as a PNG artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            figure.savefig(path, dpi=120, bbox_inches="tight")
            self.log_artifact(path)

    def record_checkpoint(self, path: str | Path) -> None:
        """Record where the (DVC-cached) checkpoint is and its md5; no second copy."""
        path = Path(path)
        self.set_tags({"checkpoint.path": str(path), "checkpoint.md5": file_digest(path, "md5")})

    def write_run_json(self, path: str | Path, **extra: Any) -> None:
        """The run record DVC caches with the checkpoint, so links survive cache restores."""
        write_json(path, {"run_id": self.run_id, "experiment_id": self.experiment_id,
                          "run_name": self.name, "tracking_uri": tracking_uri(), **self.tags, **extra})


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the first access to a SQLite store: MLflow migrates a new store's schema,
    and several stages starting together (``dvc exp run -j 4``) would race on it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released on close, also if the process dies
        yield


class _Terminated(SystemExit):
    """Raised for SIGTERM so the run ends as KILLED and the process exits 143."""


class _Interrupts:
    """Ctrl-C and SIGTERM while a stage runs: they raise ``KeyboardInterrupt`` and
    ``_Terminated``, except during a store call, where the first signal is held and raised as
    the call ends, whether it returns or fails. Raised inside SQLAlchemy, it can leave a write
    transaction open on a pooled connection, and ending the run then fails with 'database is
    locked'. A second signal during the same call is raised at once, so that a hung call can
    still be interrupted; a signal the process was started to ignore stays ignored."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None

    @staticmethod
    def _raise(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Terminated(128 + signum)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth and self.pending is None:
            self.pending = signum
        else:
            self.pending = None
            self._raise(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route SIGINT and SIGTERM through this object (only in the main thread)."""
        wanted = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not signal.SIG_IGN]
        try:
            previous = {sig: signal.signal(sig, self._handler) for sig in wanted}
        except ValueError:  # not in the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the signals during a store call; raise a held one when it ends (a store
        error it interrupts stays as the signal's ``__context__``)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                self._raise(signum)


def _process_owner() -> str | None:
    """Where a pid names one process: host, boot and pid namespace (None off Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{namespace}"


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, /proc/<pid>/stat field 22), so
    that a reused pid is told apart; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3


def _end_orphans(client: MlflowClient, experiment_id: str, name: str, owner: str) -> None:
    """End as KILLED the RUNNING runs named ``name`` that a process of this host, boot and
    pid namespace left behind and that is gone (SIGKILLed, or its pid now names another
    process): no handler could end them. Best effort: a failure is logged, never raised."""
    try:
        for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
            tags = run.data.tags
            if run.info.run_name != name or tags.get("process.owner") != owner or "pid" not in tags:
                continue
            if not tags["pid"].isdigit() or _start_time(int(tags["pid"])) != tags.get("pid.start"):
                client.set_tag(run.info.run_id, "ended_by", "the next run found its process gone")
                client.set_terminated(run.info.run_id, status="KILLED")
                log.warning("mlflow run %s (%s) was left RUNNING by process %s, which is gone: "
                            "marked KILLED", name, run.info.run_id, tags["pid"])
    except MlflowException as err:
        log.warning("could not check for runs of %s left RUNNING: %s", name, err)


@contextlib.contextmanager
def stage_run(stage: str, item: str, *, track: str, role: str, params: dict[str, Any],
              experiment: str = "recdistill") -> Iterator[StageRun]:
    """Open the MLflow run of one stage execution.

    Args:
        stage: the DVC stage family (``ctr-distill``); item: its matrix item (``0``).
        params: ``{"distill.ctr": p.distill.ctr, ...}``, the params this stage reads.

    Example::

        with stage_run("ctr-distill", "0", track="ctr", role="student",
                       params={"distill.ctr": p.distill.ctr}) as run:
            run.log_epoch(1, {"valid/auc": 0.8})
    """
    root = repo_root()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        client = MlflowClient()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(
                experiment, artifact_location=(root / "mlartifacts").as_uri())
        else:
            experiment_id = found.experiment_id
        name, owner = (f"{stage}@{item}" if item else stage), _process_owner()
        if owner is not None:
            _end_orphans(client, experiment_id, name, owner)
    pid = os.getpid()
    process = {"pid": str(pid), "pid.start": _start_time(pid) or "", "process.owner": owner or ""}
    tags = {"stage": stage, "item": item, "track": track, "role": role,
            "git.commit": _git_commit(root), "dvc.exp": os.environ.get("DVC_EXP_NAME", ""),
            "params.hash": params_hash(params), "data.manifest": _manifest_hash(root),
            "host": socket.gethostname(), **process}
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    client.log_batch(run.info.run_id, params=[
        mlflow.entities.Param(k, json.dumps(v) if isinstance(v, list) else str(v))
        for k, v in flatten(params).items()])
    log.info("mlflow run %s (%s) in %s", name, run.info.run_id, tracking_uri())
    interrupts = _Interrupts()
    status = "FAILED"
    with interrupts.installed():
        try:
            yield StageRun(run.info.run_id, experiment_id, name, tags, client, interrupts)
            status = "FINISHED"
        except (KeyboardInterrupt, _Terminated):
            status = "KILLED"
            raise
        finally:
            with interrupts.held():
                client.set_terminated(run.info.run_id, status=status)
