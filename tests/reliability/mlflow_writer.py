"""One of several processes logging to the same MLflow store at once (concurrency test).

Waits for GO_FILE (so every writer hits the store together), opens a tracking.stage_run,
logs EPOCHS x METRICS per-epoch values with run.log_epoch, final metrics, tags and a JSON
artifact, then writes its run id to OUT_FILE.

    python tests/reliability/mlflow_writer.py INDEX EPOCHS METRICS GO_FILE OUT_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from recdistill import tracking


def value(index: int, epoch: int, metric: int) -> float:
    """The value writer ``index`` logs for ``metric`` at ``epoch`` (the test recomputes it)."""
    return index * 1000.0 + epoch + metric / 100.0


def main() -> None:
    index, epochs, metrics = (int(a) for a in sys.argv[1:4])
    go, out = Path(sys.argv[4]), Path(sys.argv[5])
    while not go.exists():
        time.sleep(0.01)
    with tracking.stage_run("writer", str(index), track="reliability", role="alone",
                            params={"writer": {"index": index, "epochs": epochs}}) as run:
        for epoch in range(1, epochs + 1):
            run.log_epoch(epoch, {f"valid/m{j}@10": value(index, epoch, j) for j in range(metrics)})
        run.log_metrics({"test/final": float(index)})
        run.set_tags({"writer.index": str(index)})
        run.log_dict({"index": index}, "history.json")
    out.write_text(run.run_id)


if __name__ == "__main__":
    main()
