"""MLflow conventions: run name, tags, flattened params, terminal status on error or SIGTERM,
and what the MLflow UI reads (experiment kind, source tags, dataset input, group-by tags).

Tests that send SIGINT set the disposition they test (tests/sigdefaults.py), so they hold
also when pytest runs with SIGINT ignored (``nohup make test &``, any background job)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict
from sigdefaults import default_signals, ignore_sigint

from recdistill import tracking


class StudentParams(BaseModel):  # a params block shaped like recdistill.params' (frozen pydantic)
    model_config = ConfigDict(frozen=True)
    type: str = "outer"
    depth: int = 3
    widths: tuple[int, ...] = (64, 32)


class CtrDistillParams(BaseModel):
    model_config = ConfigDict(frozen=True)
    student: StudentParams = StudentParams()
    alpha: float = 1.0
    beta: float = 921.6


def _run(run_id: str) -> tuple[Run, MlflowClient]:
    client = MlflowClient(tracking.tracking_uri())
    return client.get_run(run_id), client


def test_stage_run_tags_params_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "exp-beta")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    with tracking.stage_run("ctr-distill", "0", track="ctr", role="student",
                            params={"distill.ctr": CtrDistillParams()}) as run:
        run.log_epoch(1, {"valid/auc": 0.7})
        run.log_epoch(2, {"valid/auc": 0.8, "valid/ndcg@10": 0.5})
        run.log_metrics({"test/auc": 0.79})
        ckpt = tmp_path / "model.pt"
        ckpt.write_bytes(b"weights")
        run.record_checkpoint(ckpt)
    info, client = _run(run.run_id)
    assert info.info.status == "FINISHED" and info.info.run_name == "ctr-distill@0"
    tags = info.data.tags
    assert tags["stage"] == "ctr-distill" and tags["track"] == "ctr" and tags["role"] == "student"
    assert (tags["dvc.exp"], tags["dvc.exp.baseline"]) == ("exp-beta", "0123abc") and len(tags["params.hash"]) == 16
    assert tags["checkpoint.md5"] == "63f4f1e9b725370f459720575cd5f953"  # md5 of b"weights"
    assert info.data.params["distill.ctr.beta"] == "921.6"
    assert info.data.params["distill.ctr.student.type"] == "outer"
    assert info.data.params["distill.ctr.student.widths"] == "[64, 32]"
    history = client.get_metric_history(run.run_id, "valid/auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.8)]
    assert info.data.metrics["test/auc"] == 0.79
    assert client.get_metric_history(run.run_id, "valid/ndcg_at_10")[0].value == 0.5


def test_params_hash_depends_on_values_only() -> None:
    a = tracking.params_hash({"distill.ctr": CtrDistillParams()})
    assert a == tracking.params_hash({"distill.ctr": CtrDistillParams()})
    assert a != tracking.params_hash({"distill.ctr": CtrDistillParams(beta=100.0)})


def test_error_marks_run_failed() -> None:
    with pytest.raises(RuntimeError), tracking.stage_run("x", "1", track="t", role="r", params={}) as run:
        raise RuntimeError("boom")
    assert _run(run.run_id)[0].info.status == "FAILED"


def test_sigterm_marks_run_killed(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from recdistill import tracking
        with tracking.stage_run("slow", "0", track="t", role="r", params={}) as run:
            Path(sys.argv[1]).write_text(run.run_id)
            time.sleep(60)
    """))
    marker = tmp_path / "run_id"
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=os.environ.copy(),
                            preexec_fn=default_signals)
    for _ in range(600):
        if marker.exists() and marker.read_text():
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _run(marker.read_text())[0].info.status == "KILLED"


@pytest.mark.usefixtures("sigint_default")
@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_during_a_store_call_waits_for_it(monkeypatch: pytest.MonkeyPatch, sig: int,
                                                   raised: type[BaseException]) -> None:
    """A signal that lands inside an MLflow call is raised once the call returns: raised
    inside SQLAlchemy it could leave the SQLite store locked, so the run could not be ended."""
    with pytest.raises(raised) as caught, \
            tracking.stage_run("held", "0", track="t", role="r", params={}) as run:
        log_batch = run.client.log_batch

        def signalled_log_batch(*args: Any, **kwargs: Any) -> None:
            os.kill(os.getpid(), sig)  # the handler runs here, at once, unless it is held
            log_batch(*args, **kwargs)

        monkeypatch.setattr(run.client, "log_batch", signalled_log_batch)
        run.log_epoch(1, {"valid/auc": 0.7})
        pytest.fail("the held signal was not raised after the call")
    info = _run(run.run_id)[0]
    assert info.data.metrics == {"valid/auc": 0.7} and info.info.status == "KILLED"
    if isinstance(caught.value, SystemExit):
        assert caught.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(sig) is (signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


def test_a_signal_held_during_a_failing_store_call_is_still_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store call fails after the signal landed: the signal is raised all the same (the
    store's error as its context) and the run ends KILLED."""
    with pytest.raises(SystemExit) as caught, \
            tracking.stage_run("held", "1", track="t", role="r", params={}) as run:
        def failing_log_batch(*args: object, **kwargs: object) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            raise tracking.MlflowException("store down")

        monkeypatch.setattr(run.client, "log_batch", failing_log_batch)
        run.log_epoch(1, {"valid/auc": 0.7})
    assert caught.value.code == 128 + signal.SIGTERM
    assert isinstance(caught.value.__context__, tracking.MlflowException)
    assert _run(run.run_id)[0].info.status == "KILLED"


@pytest.mark.usefixtures("sigint_default")
def test_a_second_signal_during_a_store_call_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C twice interrupts a hung store call: the second is not held."""
    reached = []
    with pytest.raises(KeyboardInterrupt), \
            tracking.stage_run("held", "2", track="t", role="r", params={}) as run:
        def hung_log_batch(*args: object, **kwargs: object) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the handler raises here
            reached.append("after the second Ctrl-C")

        monkeypatch.setattr(run.client, "log_batch", hung_log_batch)
        run.log_epoch(1, {"valid/auc": 0.7})
    assert reached == [] and _run(run.run_id)[0].info.status == "KILLED"


def test_a_sigint_the_process_ignores_stays_ignored() -> None:
    """Documented behaviour: a stage started with Ctrl-C ignored (a background job) keeps
    ignoring it; SIGTERM is still handled (its run would end KILLED)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with tracking.stage_run("ignored", "0", track="t", role="r", params={}):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_next_run_ends_a_run_whose_process_is_gone() -> None:
    """A SIGKILLed stage leaves its run RUNNING; the next run of the same stage and item
    from the same host, boot and pid namespace ends it KILLED when its process is gone or
    its pid now names another process, and leaves alone a live one and another owner's."""
    with tracking.stage_run("orphan", "0", track="t", role="r", params={}) as first:
        pass
    owner, me = _run(first.run_id)[0].data.tags["process.owner"], os.getpid()
    assert owner.startswith(socket.gethostname() + "/")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # the pid of a process that has exited
    cases = {"gone": {"pid": gone, "pid.start": "1", "process.owner": owner},
             "reused": {"pid": str(me), "pid.start": "1", "process.owner": owner},
             "alive": {"pid": str(me), "pid.start": tracking.process_start(me) or "", "process.owner": owner},
             "elsewhere": {"pid": gone, "pid.start": "1", "process.owner": "other-host/boot/pid:[1]"}}
    client = MlflowClient(tracking.tracking_uri())
    left = {case: client.create_run(first.experiment_id, run_name="orphan@0", tags=tags).info.run_id
            for case, tags in cases.items()}  # RUNNING, as a SIGKILL leaves a run
    with tracking.stage_run("orphan", "0", track="t", role="r", params={}) as run:
        pass
    status = {case: _run(run_id)[0].info.status for case, run_id in left.items()}
    assert status == {"gone": "KILLED", "reused": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING"}
    assert _run(left["gone"])[0].data.tags["ended_by"] == "the next run found its process gone"
    assert _run(run.run_id)[0].info.status == "FINISHED"


def test_a_stage_name_with_a_quote_is_no_filter_error() -> None:
    with tracking.stage_run("it's", "0", track="t", role="r", params={}) as run:
        pass
    assert _run(run.run_id)[0].info.status == "FINISHED"


def test_a_stage_started_with_sigint_ignored_finishes_after_a_ctrl_c(tmp_path: Path) -> None:
    """The same, end to end: a stage process started as a background job (SIGINT ignored)
    lets a Ctrl-C pass and ends its run FINISHED."""
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import signal, sys, time
        from pathlib import Path
        from recdistill import tracking
        marker, go = Path(sys.argv[1]), Path(sys.argv[2])
        with tracking.stage_run("background", "0", track="t", role="r", params={}) as run:
            ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            marker.write_text(f"{run.run_id} {ignored}")
            deadline = time.monotonic() + 60
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    """))
    marker, go = tmp_path / "run_id", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, str(script), str(marker), str(go)], env=os.environ.copy(),
                            preexec_fn=ignore_sigint)
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # discarded by the kernel: the disposition is SIG_IGN
    go.touch()
    assert proc.wait(timeout=60) == 0
    run_id, ignored = marker.read_text().split()
    assert ignored == "True" and _run(run_id)[0].info.status == "FINISHED"


# ---------------------------------------------------------------- what the MLflow UI reads
def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
                          cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _commit_checkout(root: Path) -> Path:
    """A committed repo at ``root``: dvc.yaml, a stage script, data/prepared/ctr, the data
    manifest."""
    (root / "stages").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "stages" / "ctr_train.py").write_text("# the stage\n")
    for split in ("train", "valid", "test"):
        (root / "data/prepared/ctr").mkdir(parents=True, exist_ok=True)
        (root / "data/prepared/ctr" / f"{split}.parquet").write_bytes(split.encode() * 100)
    (root / "data/prepared/coldstart/ics").mkdir(parents=True)
    (root / "data/prepared/coldstart/ics/train.parquet").write_bytes(b"ics")
    (root / "data/canonical").mkdir(parents=True)
    (root / "data/canonical/manifest.json").write_text('{"tables": {}}')
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


@pytest.fixture()
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed repo as the cwd, logging to its own SQLite store, with
    ``stages/ctr_train.py`` as the script."""
    root = _commit_checkout(tmp_path / "repo")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(sys, "argv", [str(root / "stages" / "ctr_train.py"), "teacher"])
    return root


def _datasets(run_id: str) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(name, digest, source, input tags) of each dataset input of a run."""
    inputs = _run(run_id)[0].inputs
    assert inputs is not None
    return [(d.dataset.name, d.dataset.digest, json.loads(d.dataset.source) | {"type": d.dataset.source_type},
             {t.key: t.value for t in d.tags}) for d in inputs.dataset_inputs]


def test_ui_conventions_on_a_new_store(checkout: Path) -> None:
    """The experiment is a model-training one, runs carry MLflow's source tags, the split
    they read as a dataset input, and track/role/seed tags to group by."""
    runs = {}
    for stage, role, seed in (("ctr-teacher", "teacher", 0), ("ctr-distill", "student", 1),
                              ("ctr-alone", "alone", 0)):
        with tracking.stage_run(stage, str(seed), track="ctr", role=role, params={"x": {"y": 1}}) as run:
            pass
        runs[stage] = run
    client = MlflowClient(tracking.tracking_uri())
    experiment = client.get_experiment_by_name("recdistill")
    assert experiment is not None
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracking.EXPERIMENT_KIND_TAG == "mlflow.experimentKind"

    info = _run(runs["ctr-distill"].run_id)[0]
    tags = info.data.tags
    head = _git(checkout, "rev-parse", "HEAD")
    assert tags["mlflow.source.name"] == "stages/ctr_train.py" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == head and tags["mlflow.source.git.dirty"] == "false"
    assert "git.commit" not in tags
    assert (tags["track"], tags["role"], tags["seed"]) == ("ctr", "student", "1")
    found = client.search_runs([experiment.experiment_id], filter_string="tags.role = 'teacher'")
    assert [r.info.run_name for r in found] == ["ctr-teacher@0"]

    [(name, digest, source, input_tags)] = _datasets(info.info.run_id)
    assert (name, source, input_tags) == ("ml-100k/ctr", {"uri": "data/prepared/ctr", "type": "local"},
                                          {"mlflow.data.context": "training"})
    assert len(digest) == 16 and digest != tags["data.manifest"]  # the split's own hash
    assert {d[1] for r in runs.values() for d in _datasets(r.run_id)} == {digest}  # same split, same digest

    (checkout / "data/prepared/ctr/train.parquet").write_bytes(b"another split")
    (checkout / "stages/ctr_train.py").write_text("# edited\n")  # a tracked file: the checkout is dirty
    with tracking.stage_run("ctr-teacher", "0", track="ctr", role="teacher", params={}) as run:
        pass
    assert run.commit == head + "-dirty"
    assert _run(run.run_id)[0].data.tags["mlflow.source.git.dirty"] == "true"
    assert _datasets(run.run_id)[0][1] != digest


def test_ui_conventions_of_other_stages(checkout: Path) -> None:
    """An explicit split and seed (coldstart's ``<scenario>-<seed>`` items), evaluate's
    whole data/prepared, and no dataset for the data stages or where no split folder exists."""
    with tracking.stage_run("agnn", "ics-2", track="coldstart", role="teacher", params={}, seed=2,
                            data="data/prepared/coldstart/ics") as agnn:
        pass
    with tracking.stage_run("evaluate", "", track="all", role="summary", params={}) as evaluate:
        pass
    with tracking.stage_run("prepare", "", track="data", role="data", params={}) as prepare:
        pass
    with tracking.stage_run("agnn", "ucs-0", track="coldstart", role="teacher", params={}) as default:
        pass  # no seed or split given: data/prepared/coldstart, no seed tag (the item is no number)
    with tracking.stage_run("mini", "0", track="reliability", role="alone", params={}) as nowhere:
        pass
    with tracking.stage_run("neighbors", "ics", track="coldstart", role="data", params={},
                            data="data/prepared/coldstart/ics/train.parquet") as neighbors:
        pass
    assert _run(agnn.run_id)[0].data.tags["seed"] == "2"
    assert [d[0] for d in _datasets(agnn.run_id)] == ["ml-100k/coldstart/ics"]
    [(name, _, source, input_tags)] = _datasets(evaluate.run_id)
    assert (name, source["uri"], input_tags["mlflow.data.context"]) == \
        ("ml-100k", "data/prepared", "evaluation")
    assert "seed" not in _run(evaluate.run_id)[0].data.tags
    assert "seed" not in _run(default.run_id)[0].data.tags
    assert [d[0] for d in _datasets(default.run_id)] == ["ml-100k/coldstart"]
    assert _datasets(prepare.run_id) == [] and _datasets(nowhere.run_id) == []
    [(name, digest, source, input_tags)] = _datasets(neighbors.run_id)  # one file as the split
    assert (name, source["uri"], input_tags["mlflow.data.context"]) == \
        ("ml-100k/coldstart/ics/train.parquet", "data/prepared/coldstart/ics/train.parquet", "preprocessing")
    assert digest == _datasets(agnn.run_id)[0][1]  # the folder holds that one file, of the same name


def test_an_existing_experiment_gets_its_kind_unless_it_has_one(checkout: Path) -> None:
    client = MlflowClient(tracking.tracking_uri())
    old = client.create_experiment("made-before")
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    for name in ("made-before", "chosen"):
        with tracking.stage_run("x", "0", track="t", role="r", params={}, experiment=name):
            pass
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


# ------------------------------------------------- experiments in DVC's temporary copies
@pytest.mark.parametrize("copy", [".dvc/tmp/exps/standalone/tmpa1b2", ".dvc/tmp/exps/tmpc3d4"])
def test_a_run_in_an_experiment_copy_lands_in_the_main_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: str) -> None:
    """``dvc exp run --temp`` (standalone/tmp*) and the queue (tmp*) run stages in a copy
    that DVC deletes afterwards: the run goes to the main repository's store and artifact
    folder; the source, git and dataset tags describe the copy's code; the experiment's name
    and baseline are tagged. A ``DVC_ROOT`` naming another repository changes nothing."""
    main = _commit_checkout(tmp_path / "main")
    (main / "stages/ctr_train.py").write_text("# the main checkout moved on\n")
    root = _commit_checkout(main / copy)
    baseline = _git(root, "rev-parse", "HEAD")
    monkeypatch.chdir(root / "data")  # DVC runs a stage in its wdir, the copy's root or below
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("DVC_EXP_NAME", "beta-100")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", baseline)
    monkeypatch.setattr(sys, "argv", [str(root / "stages" / "ctr_train.py")])
    assert (tracking.repo_root(), tracking.store_root()) == (root, main)
    assert tracking.tracking_uri() == f"sqlite:///{main / 'mlflow.db'}"
    with tracking.stage_run("ctr-distill", "0", track="ctr", role="student", params={}) as run:
        pass
    assert not (root / "mlflow.db").exists() and (main / "mlflow.db").is_file()
    info, client = _run(run.run_id)
    tags = info.data.tags
    assert (tags["dvc.exp"], tags["dvc.exp.baseline"]) == ("beta-100", baseline)
    assert tags["mlflow.source.name"] == "stages/ctr_train.py"
    assert (tags["mlflow.source.git.commit"], tags["mlflow.source.git.dirty"]) == (baseline, "false")
    assert _datasets(run.run_id)[0][2]["uri"] == "data/prepared/ctr"
    assert client.get_experiment(run.experiment_id).artifact_location == (main / "mlartifacts").as_uri()


def test_outside_an_experiment_the_store_is_the_checkouts(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain checkout (and one merely inside a folder called exps) keeps its own store; runs
    outside an experiment carry empty experiment tags."""
    nested = checkout / "exps" / "tmpx"
    nested.mkdir(parents=True)
    (nested / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(nested)
    assert tracking.store_root() == tracking.repo_root() == nested
    monkeypatch.chdir(checkout / "stages")
    assert tracking.store_root() == tracking.repo_root() == checkout
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri() == f"sqlite:///{checkout / 'mlflow.db'}"
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    with tracking.stage_run("prepare", "", track="data", role="data", params={}) as run:
        pass
    tags = _run(run.run_id)[0].data.tags
    assert (tags["dvc.exp"], tags["dvc.exp.baseline"]) == ("", "")
