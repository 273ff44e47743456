"""MLflow conventions (ARCHITECTURE §7), in one place; the only module that imports mlflow.

``stage_run`` opens one run per stage execution, named ``<stage>@<item>``, tagged with the
stage, item, track, role, seed, DVC experiment name, a hash of the params the stage reads,
the data manifest hash, the host and the process (pid, start time, and on Linux the
host/boot/pid-namespace it belongs to), and logs those params flattened with dots. Where the
code came from is in MLflow's own source tags (``mlflow.source.name`` = the stage script,
``mlflow.source.type`` = LOCAL, ``mlflow.source.git.commit``, ``mlflow.source.git.dirty``),
which the UI shows in its Source column; the split the stage reads is logged as the run's
dataset input (``ml-100k/ctr``, digest = a hash of the split's files), shown in the Dataset
column. The experiment is tagged ``mlflow.experimentKind = custom_model_development``
("Machine learning"), so the UI treats it as a training experiment and not a GenAI one. The
run ends FINISHED on success, KILLED on Ctrl-C/SIGTERM and FAILED on any other error. A
SIGKILLed process cannot end its run; the next run of the same stage and item from the same
host, boot and pid namespace ends it KILLED once its process is gone.

Store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<main>/mlflow.db`` with artifacts
under ``<main>/mlartifacts``, where ``<main>`` is the main repository (:func:`store_root`), also
for a stage that runs in the temporary copy of ``dvc exp run --temp`` or of a queued
experiment, which DVC deletes when the experiment ends. What describes the code being run
(source and git tags, data manifest, dataset input) comes from the checkout the stage runs
in (:func:`repo_root`). An experiment's runs are tagged ``dvc.exp`` (its name) and
``dvc.exp.baseline`` (the commit it started from), empty outside experiments.
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
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from recdistill.io import file_digest, write_json
from recdistill.params import section_dict

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402  (telemetry switches must be set before the import)
from mlflow.entities import Dataset, DatasetInput, InputTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import (  # noqa: E402
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)

__all__ = ["StageRun", "stage_run", "repo_root", "store_root", "tracking_uri", "flatten", "mlflow_key", "params_hash",
           "process_owner", "process_start"]

log = logging.getLogger(__name__)
MANIFEST = Path("data/canonical/manifest.json")
PREPARED = Path("data/prepared")  # one split folder per track: data/prepared/<track>
DATASET = "ml-100k"  # what every split is cut from; dataset inputs are named ml-100k/<split>
# MLflow 3's UI reads this experiment tag: "genai_development" opens an experiment on its
# traces, "custom_model_development" ("Machine learning") on its training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SPLIT_HASH_LIMIT = 256 << 20  # bytes: a larger split is identified by the manifest hash instead
EXPERIMENT_COPIES = Path(".dvc/tmp/exps")  # where DVC 3 puts the temporary copies of experiments


def repo_root() -> Path:
    """The checkout this process runs in: the nearest parent holding dvc.yaml (falls back to
    the cwd). Inside an experiment's temporary copy this is the copy, whose code, params and
    data are the ones being run."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return here


def store_root() -> Path:
    """The main repository, whose MLflow store and job registry this process uses.

    ``dvc exp run --temp`` and queued experiments run the pipeline in a copy that DVC makes
    under ``<main>/.dvc/tmp/exps/`` (``standalone/tmpXXXX`` for ``--temp``, ``tmpXXXX`` for the
    queue; DVC 3's ``repo.tmp_dir`` / ``experiments.utils.EXEC_TMP_DIR``) and deletes
    when the experiment ends, so anything kept under :func:`repo_root` there is lost. The
    main repository is the one whose ``.dvc/tmp/exps`` holds the checkout; anywhere else it
    is the checkout itself. The path decides, not ``DVC_ROOT``: DVC's queue points that at
    the main repository, but a plain ``dvc repro`` passes an inherited ``DVC_ROOT`` through
    unchanged (``stage.run.prepare_kwargs``), so it can name an unrelated repository.
    """
    here = repo_root()
    for main in here.parents:
        if here.is_relative_to(main / EXPERIMENT_COPIES):
            return main
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values.

    >>> flatten({"distill": {"ctr": {"beta": 921.6, "student": {"depth": 3}}}})
    {'distill.ctr.beta': 921.6, 'distill.ctr.student.depth': 3}
    """
    if callable(getattr(obj, "model_dump", None)) and not isinstance(obj, type):  # a params block
        obj = section_dict(obj)
    elif is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
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


def _git_tags(root: Path) -> dict[str, str]:
    """MLflow's source tags for the checkout: the commit, and whether tracked files differ
    from it (``{}`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {MLFLOW_GIT_COMMIT: out.stdout.strip(), MLFLOW_GIT_DIRTY: "true" if dirty else "false"}


def _source_name(root: Path) -> str:
    """The script this process runs (``stages/ctr_train.py``), relative to the repo if inside."""
    script = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m", "-") else ""
    if not script:
        return "<python>"
    path = Path(script).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _manifest_hash(root: Path) -> str:
    path = root / MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "none"


def _split_hash(path: Path) -> str | None:
    """sha256 (first 16 hex digits) of a split: its files' relative paths and contents.
    None when there is nothing to hash or more than ``SPLIT_HASH_LIMIT`` bytes of it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    try:
        if not files or not path.exists() or sum(f.stat().st_size for f in files) > SPLIT_HASH_LIMIT:
            return None
        digest = hashlib.sha256()
        for file in files:
            name = file.relative_to(path).as_posix() if path.is_dir() else file.name
            digest.update(f"{name}\0{file_digest(file)}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()[:16]


def _dataset_input(root: Path, track: str, role: str, data: str | Path | None,
                   manifest: str) -> DatasetInput | None:
    """The run's input split as an MLflow dataset: named ``ml-100k/<folder under
    data/prepared>`` (``ml-100k/ctr``, ``ml-100k/coldstart/ics``; ``ml-100k`` for the whole
    of data/prepared or another folder), its digest a hash of the split's files (the data
    manifest hash for a split that is missing or too large), its context ``training``
    (``evaluation`` for evaluate, ``preprocessing`` for role ``data``). ``data`` None reads
    ``data/prepared/<track>`` (all of data/prepared for track ``all``) and logs nothing when
    that folder is missing, or for track ``data`` (the stages that build the splits)."""
    if data is None:
        if track == "data":
            return None
        data = PREPARED if track == "all" else PREPARED / track
        if not (root / data).is_dir():
            return None
    full = Path(os.path.abspath(root / data))
    shown = full.relative_to(root).as_posix() if full.is_relative_to(root) else str(full)
    under = full.relative_to(root / PREPARED).as_posix() if full.is_relative_to(root / PREPARED) else "."
    name = DATASET if under == "." else f"{DATASET}/{under}"
    # what mlflow.data's MetaDataset records for a local source, without a class that MLflow
    # could be asked to load: the stage reads the Parquet files itself
    dataset = Dataset(name=name, digest=_split_hash(full) or manifest, source_type="local",
                      source=json.dumps({"uri": shown}))
    context = ("evaluation" if track == "all" or role == "summary" else
               "preprocessing" if role == "data" else "training")
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def _experiment_id(client: MlflowClient, name: str, root: Path) -> str:
    """The experiment's id, created if missing; either way tagged as a model-training
    experiment unless it already says what kind it is."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri(),
                                         tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return found.experiment_id


def _commit(tags: dict[str, str]) -> str:
    return tags.get(MLFLOW_GIT_COMMIT, "unknown") + ("-dirty" if tags.get(MLFLOW_GIT_DIRTY) == "true" else "")


@dataclass
class StageRun:
    """A live MLflow run with the logging helpers stages use."""

    run_id: str
    experiment_id: str
    name: str
    tags: dict[str, str]
    client: MlflowClient
    interrupts: _Interrupts

    @property
    def commit(self) -> str:
        """The git commit the stage ran from, ``-dirty`` appended when tracked files differed
        from it (``unknown`` outside a git checkout): for reports, one string."""
        return _commit(self.tags)

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
        """Record where the (DVC-cached) checkpoint is and its md5, no second copy: the md5
        is how :func:`checkpoint_runs` finds the run that trained a checkpoint."""
        path = Path(path)
        self.set_tags({"checkpoint.path": str(path), "checkpoint.md5": file_digest(path, "md5")})


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


def process_owner() -> str | None:
    """Where a pid names one process: host, boot and pid namespace (None off Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> str | None:
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
            if not tags["pid"].isdigit() or process_start(int(tags["pid"])) != tags.get("pid.start"):
                client.set_tag(run.info.run_id, "ended_by", "the next run found its process gone")
                client.set_terminated(run.info.run_id, status="KILLED")
                log.warning("mlflow run %s (%s) was left RUNNING by process %s, which is gone: "
                            "marked KILLED", name, run.info.run_id, tags["pid"])
    except MlflowException as err:
        log.warning("could not check for runs of %s left RUNNING: %s", name, err)


@contextlib.contextmanager
def stage_run(stage: str, item: str, *, track: str, role: str, params: dict[str, Any],
              experiment: str = "recdistill", seed: int | str | None = None,
              data: str | Path | None = None) -> Iterator[StageRun]:
    """Open the MLflow run of one stage execution.

    Args:
        stage: the DVC stage family (``ctr-distill``); item: its matrix item (``0``).
        track, role: tags the UI groups runs by (``ctr``; ``teacher``, ``student``, ``alone``).
        params: ``{"distill.ctr": p.distill.ctr, ...}``, the params this stage reads.
        seed: the training seed, tagged ``seed``; None takes ``item`` when it is a number
            (the seed matrix of the training stages) and tags none otherwise.
        data: the split folder the stage reads (``data/prepared/coldstart/ics``), relative to
            the repository root; None takes ``data/prepared/<track>``. Logged as the run's
            dataset input (see :func:`_dataset_input`).

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
        experiment_id = _experiment_id(client, experiment, store_root())
        name, owner = (f"{stage}@{item}" if item else stage), process_owner()
        if owner is not None:
            _end_orphans(client, experiment_id, name, owner)
    pid = os.getpid()
    process = {"pid": str(pid), "pid.start": process_start(pid) or "", "process.owner": owner or ""}
    if seed is None and item.isdigit():
        seed = item
    manifest = _manifest_hash(root)
    tags = {"stage": stage, "item": item, "track": track, "role": role,
            **({"seed": str(seed)} if seed is not None else {}),
            MLFLOW_SOURCE_NAME: _source_name(root), MLFLOW_SOURCE_TYPE: "LOCAL", **_git_tags(root),
            "dvc.exp": os.environ.get("DVC_EXP_NAME", ""),
            "dvc.exp.baseline": os.environ.get("DVC_EXP_BASELINE_REV", ""),
            "params.hash": params_hash(params), "data.manifest": manifest,
            "host": socket.gethostname(), **process}
    dataset = _dataset_input(root, track, role, data, manifest)
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    log.info("mlflow run %s (%s) in %s", name, run.info.run_id, tracking_uri())
    interrupts = _Interrupts()
    status = "FAILED"
    with interrupts.installed():
        try:
            with interrupts.held():
                client.log_batch(run.info.run_id, params=[
                    mlflow.entities.Param(k, json.dumps(list(v)) if isinstance(v, list | tuple) else str(v))
                    for k, v in flatten(params).items()])
                if dataset is not None:
                    client.log_inputs(run.info.run_id, datasets=[dataset])
            yield StageRun(run.info.run_id, experiment_id, name, tags, client, interrupts)
            status = "FINISHED"
        except (KeyboardInterrupt, _Terminated):
            status = "KILLED"
            raise
        finally:
            with interrupts.held():
                client.set_terminated(run.info.run_id, status=status)


def checkpoint_runs(md5s: Collection[str], experiment: str) -> dict[str, dict[str, str]]:
    """For each checkpoint md5, the latest FINISHED run of ``experiment`` that recorded it
    (:meth:`StageRun.record_checkpoint`): its ids, name, git commit and params hash. The
    link lives in the store, not in a file beside the checkpoint, so that the DVC outs of a
    rerun that trains the same weights are the same bytes; a checkpoint whose run the store
    does not hold (another machine's store, a deleted run) is left out.
    """
    client = MlflowClient(tracking_uri())
    found = client.get_experiment_by_name(experiment)
    wanted, links = set(md5s), {}
    if found is None or not wanted:
        return {}
    token = None
    while True:  # newest first: the first run seen for an md5 is its latest
        page = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=1000, page_token=token)
        for run in page:
            md5 = run.data.tags.get("checkpoint.md5")
            if md5 in wanted and md5 not in links:
                tags = run.data.tags
                links[md5] = {"run_id": run.info.run_id, "experiment_id": found.experiment_id,
                              "run_name": run.info.run_name or "", "git.commit": _commit(tags),
                              "params.hash": tags.get("params.hash", "")}
        token = page.token
        if not token or len(links) == len(wanted):
            return links
