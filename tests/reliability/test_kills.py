"""Kills: a training stage stopped by SIGTERM or SIGKILL mid-run leaves no half-written out.

- The real ``ctr-teacher`` stage on the synthetic workspace, killed mid-training (SIGTERM,
  then SIGKILL): its previous model folder and metrics file stay byte-identical, its MLflow
  run ends KILLED (SIGTERM; a SIGKILL leaves it RUNNING, no handler can run, until the next
  run of the stage ends it KILLED), and the next run finishes and reproduces the earlier
  metrics.
- mini_stage.py (fit + save_checkpoint + stage_run) killed at exact moments: mid-epoch and
  inside the atomic write of its out folder.
- ``dvc repro`` whose stage is killed: the next ``dvc repro`` finishes and ``dvc status`` is clean.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import relkit
import yaml
from sigdefaults import default_signals

from recdistill import io as rio
from recdistill.io import file_digest
from recdistill.train import load_checkpoint

MINI = relkit.HERE / "mini_stage.py"
CTR_ARGS = ["teacher", "--seed", "0", "--prepared", "data/prepared/ctr", "--canonical", "data/canonical",
            "--out", "models/ctr/teacher-s0", "--metrics", "metrics/ctr/teacher-s0.json"]
pytestmark = pytest.mark.slow


def start(argv: list[str | Path], cwd: Path, store: Path, log: Path) -> subprocess.Popen[bytes]:
    """A stage as a user starts it from a terminal: SIGINT and SIGTERM at their defaults, even
    when pytest runs as a background job with SIGINT ignored (see tests/sigdefaults.py)."""
    with open(log, "wb") as err:
        return subprocess.Popen([relkit.PYTHON, *map(str, argv)], cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=err, env=relkit.stage_env(store), preexec_fn=default_signals)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes] | None, log: Path,
             timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended (exit {proc.returncode}) before the kill point:\n"
                        + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            pytest.fail("kill point not reached in time:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(0.05)


def progress(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def in_epoch(path: Path, epoch: int) -> bool:
    """mini_stage.py has started a batch of ``epoch`` or a later one (the file: pid epoch batch)."""
    fields = progress(path)
    return len(fields) == 3 and int(fields[1]) >= epoch


def set_budget(ws: Path, section: str, *, epochs: int, patience: int) -> None:
    """Set the epoch budget and patience of a params section (wherever the section keeps them)."""
    p = yaml.safe_load((ws / "params.yaml").read_text())
    assert relkit.set_within(p, section, epochs=epochs, patience=patience) == 2, f"no budget in {section}"
    relkit.write_yaml(ws / "params.yaml", p)


# ---------------------------------------------------------------- the real ctr-teacher stage
def test_ctr_stage_killed_keeps_previous_outputs_and_reruns(workspace: Path, tmp_path: Path) -> None:
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    first = relkit.run([relkit.stage("ctr_train.py"), *CTR_ARGS], ws, store)
    assert first.returncode == 0, first.stderr[-3000:]
    outs = [ws / "models/ctr/teacher-s0", ws / "metrics/ctr/teacher-s0.json"]
    before = [relkit.snapshot(o) for o in outs]
    baseline = json.loads(outs[1].read_text())["metrics"]

    set_budget(ws, "train.ctr", epochs=100_000, patience=100_000)
    statuses = ["FINISHED"]
    for sig, code, status in ((signal.SIGTERM, 128 + signal.SIGTERM, "KILLED"),
                              (signal.SIGKILL, -signal.SIGKILL, "RUNNING")):
        log = tmp_path / f"{sig.name}.log"
        proc = start([relkit.stage("ctr_train.py"), *CTR_ARGS], ws, store, log)
        def reached(log: Path = log) -> bool:
            return "ctr-teacher epoch 3:" in log.read_text(errors="replace")

        wait_for(reached, proc, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code, log.read_text()[-3000:]
        assert [relkit.snapshot(o) for o in outs] == before, f"{sig.name} changed a previous output"
        assert relkit.stray_temps(outs[0].parent) == [] and relkit.stray_temps(outs[1].parent) == []
        statuses.append(status)
        assert relkit.run_status(store) == {"ctr-teacher@0": statuses}
        if sig == signal.SIGTERM:
            assert "Traceback" not in log.read_text(), "SIGTERM should exit quietly with 143"

    set_budget(ws, "train.ctr", epochs=2, patience=1)
    again = relkit.run([relkit.stage("ctr_train.py"), *CTR_ARGS], ws, store)
    assert again.returncode == 0, again.stderr[-3000:]
    # SIGTERM ended its run KILLED; the next run ended the SIGKILLed one KILLED
    assert relkit.run_status(store) == {"ctr-teacher@0": ["FINISHED", "KILLED", "KILLED", "FINISHED"]}
    assert json.loads(outs[1].read_text())["metrics"] == baseline  # same params, same numbers
    state, meta = load_checkpoint(outs[0] / "model.pt")
    assert state and meta


# ---------------------------------------------------------------- exact kill points
def _mini(ws: Path, *extra: str) -> list[str | Path]:
    return [MINI, "models/mini", "metrics/mini.json", *extra]


@pytest.fixture(scope="module")
def mini_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where mini_stage.py finished once (outs + its MLflow store)."""
    base = tmp_path_factory.mktemp("mini-base")
    store = relkit.seeded_store(base / "mlflow.db")
    (base / "ws").mkdir()
    proc = relkit.run(_mini(base / "ws", "--epochs", "2"), base / "ws", store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


@pytest.mark.parametrize(("where", "sig"), [
    ("mid-epoch", signal.SIGTERM), ("mid-epoch", signal.SIGKILL),
    ("in-atomic-write", signal.SIGTERM), ("in-atomic-write", signal.SIGKILL),
    ("mid-epoch", signal.SIGINT)],
    ids=["mid-epoch-SIGTERM", "mid-epoch-SIGKILL", "in-write-SIGTERM", "in-write-SIGKILL",
         "mid-epoch-SIGINT"])
def test_mini_stage_killed_at_exact_point(mini_base: Path, tmp_path: Path, where: str,
                                          sig: signal.Signals) -> None:
    shutil.copytree(mini_base, tmp_path / "c")
    ws, store = tmp_path / "c" / "ws", tmp_path / "c" / "mlflow.db"
    outs = [ws / "models/mini", ws / "metrics/mini.json"]
    before = [relkit.snapshot(o) for o in outs]
    marker = ws / "progress.txt"
    log = tmp_path / "kill.log"
    if where == "mid-epoch":  # a batch of epoch 2 or later is sleeping
        argv = _mini(ws, "--epochs", "50", "--batch-sleep", "0.05", "--progress", str(marker))
        reached = lambda: in_epoch(marker, 2)  # noqa: E731
    else:  # model.pt and history.json are in the temp folder, not yet renamed into place
        argv = _mini(ws, "--epochs", "2", "--write-pause", "60", "--progress", str(marker))
        reached = lambda: progress(marker)[1:] == ["writing"]  # noqa: E731
    proc = start(argv, ws, store, log)
    wait_for(reached, proc, log)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    if sig == signal.SIGINT:  # Ctrl-C: a KeyboardInterrupt traceback, exit status 1
        assert code != 0 and log.read_text().rstrip().endswith("KeyboardInterrupt")
    else:
        assert code == (128 + sig if sig == signal.SIGTERM else -sig)
    assert [relkit.snapshot(o) for o in outs] == before
    statuses = relkit.run_status(store)["mini@0"]
    assert statuses == ["FINISHED", "RUNNING" if sig == signal.SIGKILL else "KILLED"]
    if sig != signal.SIGKILL or where == "mid-epoch":
        assert relkit.stray_temps(ws / "models") == []  # the handler removed the temp folder
        return
    # SIGKILL inside the write: the complete-looking temp folder stays beside the out (R5)
    assert len(relkit.stray_temps(ws / "models")) == 1
    again = relkit.run(_mini(ws, "--epochs", "3"), ws, store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert relkit.run_status(store)["mini@0"] == ["FINISHED", "KILLED", "FINISHED"]
    state, meta = load_checkpoint(outs[0] / "model.pt")
    assert meta["model"] == "mini-mf" and json.loads(outs[1].read_text())["epochs"] == 3
    latest = max(relkit.mlflow_runs(store), key=lambda r: r.info.start_time)
    assert latest.data.tags["checkpoint.md5"] == file_digest(outs[0] / "model.pt", "md5")  # how evaluate finds it


def test_sigkill_temp_is_swept_by_next_write(tmp_path: Path) -> None:
    """What a SIGKILL inside atomic_path leaves (a full temp folder), then the next write.

    The litter is named ``.<out>.<pid of a dead process>.<random>.tmp`` so that a sweep keyed
    on dead pids (the fix proposed in R5) and a plain sweep of ``.<out>.*.tmp`` both apply.
    """
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "models" / "mini"
    litter = tmp_path / "models" / f".mini.{dead.pid}.k1ll3d.tmp"
    litter.mkdir(parents=True)
    (litter / "model.pt").write_bytes(b"x" * 1000)
    with rio.atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "model.pt").write_bytes(b"new")
    assert relkit.stray_temps(tmp_path / "models") == []


# ---------------------------------------------------------------- the replace step itself
class Interrupted(BaseException):
    """Stands for a SIGTERM (its handler raises SystemExit) arriving at one exact line."""


def test_kill_between_delete_and_replace_keeps_previous_folder(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "models" / "m-s0"
    with rio.atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "model.pt").write_bytes(b"previous")

    def replace(src: str, dst: str) -> None:
        raise Interrupted  # the signal lands right before the rename

    monkeypatch.setattr(rio.os, "replace", replace)
    with pytest.raises(Interrupted), rio.atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "model.pt").write_bytes(b"new")
    assert (out / "model.pt").read_bytes() == b"previous"


def test_kill_before_replace_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files (metrics JSON, checkpoints written alone) are replaced by one atomic rename."""
    path = tmp_path / "metrics.json"
    rio.write_json(path, {"v": 1})
    monkeypatch.setattr(rio.os, "replace", lambda src, dst: (_ for _ in ()).throw(Interrupted()))
    with pytest.raises(Interrupted):
        rio.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert relkit.stray_temps(tmp_path) == []


# ---------------------------------------------------------------- under dvc repro
def _dvc(repo: Path, store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = relkit.stage_env(store, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


DVC_YAML = {"stages": {"mini": {
    "cmd": "python mini_stage.py models/mini metrics/mini.json --epochs ${epochs} "
           "--batch-sleep ${sleep} --progress progress.txt",
    "deps": ["mini_stage.py", "synthetic.py"], "params": ["epochs", "sleep"],
    "outs": ["models/mini"], "metrics": [{"metrics/mini.json": {"cache": False}}]}}}


def test_dvc_repro_after_killed_stage_finishes(tmp_path: Path) -> None:
    """DVC removes a stage's outs before running it (they stay in its cache); after the stage
    is killed, the next `dvc repro` reruns it to completion and `dvc status` is clean."""
    repo = tmp_path / "repo"
    repo.mkdir()
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, store, "init", "-q")
    _dvc(repo, store, "config", "core.analytics", "false")
    shutil.copy(relkit.REPO / "tests" / "synthetic.py", repo / "synthetic.py")
    (repo / "mini_stage.py").write_text(MINI.read_text().replace("parents[1]", "parents[0]"))
    relkit.write_yaml(repo / "dvc.yaml", DVC_YAML)
    relkit.write_yaml(repo / "params.yaml", {"epochs": 2, "sleep": 0})
    _dvc(repo, store, "repro")

    relkit.write_yaml(repo / "params.yaml", {"epochs": 500, "sleep": 0.05})
    (repo / "progress.txt").unlink()
    log = tmp_path / "dvc.log"
    with open(log, "wb") as err:
        dvc = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=repo,
                               stdout=err, stderr=subprocess.STDOUT,
                               env=relkit.stage_env(store, PATH=f"{Path(sys.executable).parent}"
                                                    f"{os.pathsep}{os.environ['PATH']}"))
    wait_for(lambda: in_epoch(repo / "progress.txt", 2), dvc, log)
    os.kill(int(progress(repo / "progress.txt")[0]), signal.SIGKILL)  # the stage, not dvc
    assert dvc.wait(timeout=120) != 0
    assert "failed to reproduce 'mini'" in log.read_text()
    assert relkit.stray_temps(repo / "models") == []
    assert not (repo / "models/mini").exists()  # removed by DVC before the run, never half-written

    relkit.write_yaml(repo / "params.yaml", {"epochs": 3, "sleep": 0})  # (epochs 2: run-cache restore)
    _dvc(repo, store, "repro")
    assert "up to date" in _dvc(repo, store, "status").stdout
    assert load_checkpoint(repo / "models/mini/model.pt")[1]["model"] == "mini-mf"
    assert relkit.run_status(store)["mini@0"] == ["FINISHED", "KILLED", "FINISHED"]
