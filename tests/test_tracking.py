"""MLflow conventions: run name, tags, flattened params, terminal status on error or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recdistill import tracking
from recdistill.params import CtrDistillParams


def _run(run_id: str):  # noqa: ANN202
    client = MlflowClient(tracking.tracking_uri())
    return client.get_run(run_id), client


def test_stage_run_tags_params_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "exp-beta")
    with tracking.stage_run("ctr-distill", "0", track="ctr", role="student",
                            params={"distill.ctr": CtrDistillParams()}) as run:
        run.log_epoch(1, {"valid/auc": 0.7})
        run.log_epoch(2, {"valid/auc": 0.8, "valid/ndcg@10": 0.5})
        run.log_metrics({"test/auc": 0.79})
        ckpt = tmp_path / "model.pt"
        ckpt.write_bytes(b"weights")
        run.record_checkpoint(ckpt)
        run.write_run_json(tmp_path / "run.json")
    info, client = _run(run.run_id)
    assert info.info.status == "FINISHED" and info.info.run_name == "ctr-distill@0"
    tags = info.data.tags
    assert tags["stage"] == "ctr-distill" and tags["track"] == "ctr" and tags["role"] == "student"
    assert tags["dvc.exp"] == "exp-beta" and len(tags["params.hash"]) == 16
    assert tags["checkpoint.md5"] == "63f4f1e9b725370f459720575cd5f953"  # md5 of b"weights"
    assert info.data.params["distill.ctr.beta"] == "921.6"
    assert info.data.params["distill.ctr.student.type"] == "outer"
    history = client.get_metric_history(run.run_id, "valid/auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.8)]
    assert info.data.metrics["test/auc"] == 0.79
    assert client.get_metric_history(run.run_id, "valid/ndcg_at_10")[0].value == 0.5
    assert '"run_id": "%s"' % run.run_id in (tmp_path / "run.json").read_text()


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
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=os.environ.copy())
    for _ in range(600):
        if marker.exists() and marker.read_text():
            break
        if proc.poll() is not None:
            break
        import time
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _run(marker.read_text())[0].info.status == "KILLED"


@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_during_a_store_call_waits_for_it(monkeypatch: pytest.MonkeyPatch, sig: int,
                                                   raised: type[BaseException]) -> None:
    """A signal that lands inside an MLflow call is raised once the call returns: raised
    inside SQLAlchemy it could leave the SQLite store locked, so the run could not be ended."""
    with pytest.raises(raised) as caught, \
            tracking.stage_run("held", "0", track="t", role="r", params={}) as run:
        log_batch = run.client.log_batch

        def signalled_log_batch(*args: object, **kwargs: object) -> None:
            os.kill(os.getpid(), sig)  # the handler runs here, at once, unless it is held
            log_batch(*args, **kwargs)

        monkeypatch.setattr(run.client, "log_batch", signalled_log_batch)
        run.log_epoch(1, {"valid/auc": 0.7})
        pytest.fail("the held signal was not raised after the call")
    info = _run(run.run_id)[0]
    assert info.data.metrics == {"valid/auc": 0.7} and info.info.status == "KILLED"
    if raised is SystemExit:
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
             "alive": {"pid": str(me), "pid.start": tracking._start_time(me) or "", "process.owner": owner},
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
