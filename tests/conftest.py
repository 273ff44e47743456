"""Shared fixtures: the synthetic dataset in both source formats, a throwaway MLflow store,
and Ctrl-C that raises KeyboardInterrupt however pytest was started."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import synthetic  # noqa: E402
from sigdefaults import python_sigint  # noqa: E402


@pytest.fixture(scope="session")
def synth() -> synthetic.Synthetic:
    return synthetic.make()


@pytest.fixture()
def archives(tmp_path: Path, synth: synthetic.Synthetic) -> dict[str, Path]:
    return {"grouplens": synthetic.write_grouplens(synth, tmp_path / "ml-100k.zip"),
            "recbole": synthetic.write_recbole(synth, tmp_path / "recbole-1.2.1-py3-none-any.whl")}


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests log to a throwaway MLflow store, never the repo's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"


@pytest.fixture()
def sigint_default() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt during the test, also when pytest was started with
    SIGINT ignored (``nohup make test &``, any background job): see sigdefaults.py."""
    with python_sigint():
        yield
