"""A training stage's last step, the same for every track: write the arm's DVC outs and its
metrics file, and log them to the stage's MLflow run."""

from __future__ import annotations

from pathlib import Path

from recdistill.arm import ArmResult, write_metrics
from recdistill.io import atomic_path, write_json, write_parquet
from recdistill.tracking import StageRun
from recdistill.train.checkpoint import save_checkpoint
from recdistill.train.loop import history_records

__all__ = ["write_arm", "publish"]


def write_arm(result: ArmResult, out_dir: str | Path) -> None:
    """Write an arm's DVC outs into ``out_dir`` (an existing, usually temporary, folder)."""
    out_dir = Path(out_dir)
    save_checkpoint(out_dir / "model.pt", result.state, result.checkpoint.model_dump(mode="json"))
    write_json(out_dir / "history.json", history_records(result.history))
    write_parquet(out_dir / "predictions.parquet", result.predictions)




def publish(result: ArmResult, run: StageRun, *, out_dir: str | Path, metrics: str | Path) -> None:
    """A training stage's last step: write ``out_dir`` as a whole (the arm's outs), then the
    metrics file, and log the record, cost and history to the run. Nothing written here
    depends on the clock or the run: a rerun that trains the same weights writes the same
    bytes (the run finds its checkpoint by md5: :func:`recdistill.tracking.checkpoint_runs`)."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_arm(result, tmp)
    write_metrics(metrics, result.record)
    run.record_checkpoint(out_dir / "model.pt")
    cost = result.record.cost
    run.log_metrics({**result.record.metrics, "cost/params": cost.params,
                     "cost/macs_per_example": cost.macs_per_example})
    run.set_tags({"architecture": str(result.checkpoint.arch.get("name", result.record.model)),
                  "stopped": result.record.stopped})
    run.log_dict(history_records(result.history), "history.json")
