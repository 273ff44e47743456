"""End to end: DVC experiments in temporary copies keep their MLflow runs (issue 20).

``dvc exp run --temp`` and queued experiments (``dvc exp run --queue`` + ``dvc queue
start``) run the pipeline in a copy under ``.dvc/tmp/exps/`` that DVC deletes afterwards.
On the synthetic pipeline of tests/test_pipeline_e2e.py, committed, with MLflow's default
store (``MLFLOW_TRACKING_URI`` unset: its resolution is what is tested), each experiment
must add exactly one run per stage it ran to the main repository's ``mlflow.db``, tagged
with the experiment's name and baseline commit, and leave no copy or store behind. The
experiments change ``distill.ctr.beta`` and target ``ctr-distill@0``, so each reruns one
cheap stage; the stages that ran are read from DVC's output, not listed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from test_pipeline_e2e import _ran, repo  # noqa: F401  (repo: the synthetic copy, a fixture)

from recdistill import params
from recdistill.train.threads import REGISTRY

pytestmark = pytest.mark.slow
TARGET = "ctr-distill@0"
QUEUE_TIMEOUT_S = 600


def _env() -> dict[str, str]:
    """The test's environment for DVC, without what would pick the store or the
    experiment: the default store and DVC's own variables are under test."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONUNBUFFERED": "1"}
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV",
                 params.AUDIT_ENV):
        env.pop(name, None)
    return env


def _run(repo: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=repo, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _runs(repo: Path) -> dict[str, Run]:
    """Every run of the main store, by id."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recdistill")
    assert experiment is not None
    return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id], max_results=5000)}


def _copies(repo: Path) -> list[Path]:
    """Experiment copies left under .dvc/tmp/exps (DVC's ``tmpXXXX`` folders) and any MLflow
    store written there."""
    exps = repo / ".dvc/tmp/exps"
    return [*exps.glob("tmp*"), *exps.glob("standalone/tmp*"), *exps.rglob("mlflow.db")]


@pytest.fixture(scope="module")
def baseline(repo: Path) -> str:  # noqa: F811  (the imported fixture)
    """The copy, committed with the target and its upstream stages reproduced."""
    _run(repo, "dvc", "repro", TARGET)
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "-c", "user.name=test", "-c", "user.email=test@example.invalid",
         "commit", "-qm", "baseline")
    return _run(repo, "git", "rev-parse", "HEAD").strip()


def _check_experiment(repo: Path, before: dict[str, Run], name: str, ran: set[str], baseline: str) -> None:
    """The main store gained one FINISHED run per stage that ran, and only those, tagged with
    the experiment and its baseline, from the baseline's code; no copy is left."""
    added = [run for run_id, run in _runs(repo).items() if run_id not in before]
    assert sorted(r.info.run_name for r in added) == sorted(ran)
    for run in added:
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert (tags["dvc.exp"], tags["dvc.exp.baseline"]) == (name, baseline)
        assert tags["mlflow.source.git.commit"] == baseline  # the copy's checkout, params edited
    deadline = time.monotonic() + 60  # DVC removes the copy once it has collected the results
    while _copies(repo) and time.monotonic() < deadline:
        time.sleep(1)
    assert _copies(repo) == []
    assert list((repo / REGISTRY).glob("*")) == []  # every stage process left the job registry


def test_temp_experiment_runs_land_in_the_main_store(repo: Path, baseline: str) -> None:  # noqa: F811
    before = _runs(repo)
    assert before, "dvc repro logged no run"
    out = _run(repo, "dvc", "exp", "run", "--temp", "-n", "temp-beta", "-S", "distill.ctr.beta=50", TARGET)
    ran = _ran(out)
    assert TARGET in ran
    _check_experiment(repo, before, "temp-beta", ran, baseline)


def test_queued_experiment_runs_land_in_the_main_store(repo: Path, baseline: str, tmp_path: Path) -> None:  # noqa: F811
    before = _runs(repo)
    _run(repo, "dvc", "exp", "run", "--queue", "-n", "queued-beta", "-S", "distill.ctr.beta=25", TARGET)
    with open(tmp_path / "queue-start.log", "w") as log:  # the worker keeps its inherited pipes open
        subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=_env(), stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=120)
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        status = _run(repo, "dvc", "queue", "status")
        if "queued-beta" in status and ("Success" in status or "Failed" in status):
            break
        time.sleep(5)
    assert "Success" in status, f"queued experiment did not succeed in {QUEUE_TIMEOUT_S} s:\n{status}"
    ran = _ran(_run(repo, "dvc", "queue", "logs", "queued-beta"))
    assert TARGET in ran
    _check_experiment(repo, before, "queued-beta", ran, baseline)
