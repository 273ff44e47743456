"""Fixtures of the reliability suite (helpers in relkit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import relkit  # noqa: E402


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A fresh SQLite MLflow store for the subprocesses of one test."""
    return tmp_path / "mlflow.db"


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic params.yaml + data/canonical + data/prepared, built by the real stages once.

    Read-only for tests: copy it (relkit.copy_workspace) before running a stage in it.
    """
    root = tmp_path_factory.mktemp("reliability") / "ws"
    return relkit.make_workspace(root, root.parent / "setup-mlflow.db")
