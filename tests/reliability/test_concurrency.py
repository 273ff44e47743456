"""Concurrency: four stage processes logging to one SQLite MLflow store at once lose nothing.

Each writer (mlflow_writer.py) opens tracking.stage_run and logs EPOCHS x METRICS values with
run.log_epoch, plus final metrics, a tag and an artifact; all four start together (a go file).
Afterwards the store must hold four FINISHED runs with every value at its step.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mlflow_writer
import pytest
import relkit
from mlflow.tracking import MlflowClient

WRITERS, EPOCHS, METRICS = 4, 120, 5
pytestmark = pytest.mark.slow


def launch(tmp_path: Path, store: Path) -> list[subprocess.CompletedProcess[str]]:
    go = tmp_path / "go"
    procs = []
    for i in range(WRITERS):
        argv = [relkit.PYTHON, str(relkit.HERE / "mlflow_writer.py"), str(i), str(EPOCHS), str(METRICS),
                str(go), str(tmp_path / f"run{i}.txt")]
        procs.append(subprocess.Popen(argv, cwd=tmp_path, env=relkit.stage_env(store), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    time.sleep(1.0)  # let the interpreters import; they then wait for the go file together
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def check_store(tmp_path: Path, store: Path, results: list[subprocess.CompletedProcess[str]]) -> None:
    for proc in results:
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = relkit.mlflow_runs(store)
    assert sorted(r.info.run_name for r in runs) == [f"writer@{i}" for i in range(WRITERS)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(f"sqlite:///{store}")
    lost = 0
    for run in runs:
        index = int(run.data.tags["writer.index"])
        assert run.info.run_id == (tmp_path / f"run{index}.txt").read_text()
        assert run.data.metrics["test/final"] == float(index)
        assert run.data.params["writer.index"] == str(index)
        for j in range(METRICS):
            history = client.get_metric_history(run.info.run_id, f"valid/m{j}_at_10")
            got = sorted((m.step, m.value) for m in history)
            want = [(e, mlflow_writer.value(index, e, j)) for e in range(1, EPOCHS + 1)]
            lost += len(set(want) - set(got))
            assert got == want, f"writer {index} metric {j}: {len(got)} of {EPOCHS} values"
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert artifacts == ["history.json"]
    assert lost == 0
    print(f"\nconcurrency: {WRITERS} writers x {EPOCHS} epochs x {METRICS} metrics = "
          f"{WRITERS * EPOCHS * METRICS} values, none lost")


def test_four_writers_share_an_initialised_store(tmp_path: Path) -> None:
    """The usual case: the store exists (an earlier stage, e.g. download, created it)."""
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    check_store(tmp_path, store, launch(tmp_path, store))


def test_four_writers_create_the_store_together(tmp_path: Path) -> None:
    """`dvc exp run --run-all -j 4` on a fresh clone: no mlflow.db yet."""
    store = tmp_path / "mlflow.db"
    check_store(tmp_path, store, launch(tmp_path, store))
