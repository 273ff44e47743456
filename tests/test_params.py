"""params.yaml validation: every bad case names the key path, the value and what is accepted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from recdistill import params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load() -> None:
    p = params.load(REPO / "params.yaml")
    assert p.distill.ctr.beta == 921.6
    assert p.train.ctr.teacher in ("crossnet", "cin")
    assert isinstance(p.seeds, tuple) and len(p.seeds) >= 1


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[leaf] = value


BAD = [
    ("train.ctr.lr", -1, "train.ctr.lr", "> 0"),
    ("train.ctr.lr", "fast", "train.ctr.lr", "a number"),
    ("train.ctr.teacher", "dcn", "train.ctr.teacher", "'crossnet', 'cin'"),
    ("train.ctr.bogus", 1, "train.ctr.bogus", "accepted keys"),
    ("train.agnn.epochs", 2.5, "train.agnn.epochs", "an integer"),
    ("train.agnn.epochs", True, "train.agnn.epochs", "an integer"),
    ("data.ctr.neutral", "keep", "data.ctr.neutral", "'drop', 'negative'"),
    ("data.ctr.split.train", 0.5, "data.ctr.split", "sum to 0.7"),
    ("data.coldstart.warm.valid", 0.3, "data.coldstart.warm", "train + valid + test = 1"),
    ("distill.ctr.student.type", "diagonal", "distill.ctr.student.type", "'outer', 'inner'"),
    ("distill.ctr.beta", -5, "distill.ctr.beta", ">= 0"),
    ("distill.seq.temperature", 0, "distill.seq.temperature", "> 0"),
    ("neighbors.top_frac", 1.5, "neighbors.top_frac", "<= 1"),
    ("neighbors.scenarios", ["warm", "hot"], "neighbors.scenarios[1]", "'warm', 'ics', 'ucs'"),
    ("seeds", [], "seeds", "at least one seed"),
    ("seeds", [1, 1], "seeds", "distinct"),
    ("runtime.device", "tpu", "runtime.device", "'auto', 'cpu', 'cuda'"),
    ("download.timeout_s", 0, "download.timeout_s", "> 0"),
    ("tracking", "mlflow", "tracking", "a mapping"),
]


@pytest.mark.parametrize(("key", "value", "named", "accepted"), BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_bad_value_names_key(raw: dict[str, Any], key: str, value: Any, named: str, accepted: str) -> None:
    bad = copy.deepcopy(raw)
    _set(bad, key, value)
    with pytest.raises(params.ParamsError) as err:
        params.parse(bad)
    assert named in str(err.value)
    assert accepted in str(err.value)


def test_bad_checksum_format(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["download"]["sources"][0]["sha256"] = "abc"
    with pytest.raises(params.ParamsError, match=r"download\.sources\[0\]\.sha256"):
        params.parse(bad)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(params.ParamsError, match="no such file"):
        params.load(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load(broken)


def test_frozen(raw: dict[str, Any]) -> None:
    p = params.parse(raw)
    with pytest.raises(AttributeError):
        p.train.ctr.lr = 1.0  # type: ignore[misc]
