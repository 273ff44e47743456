"""params.yaml validation: every bad case names the key path, the value and what is accepted."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from pydantic import BaseModel

from recdistill import params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load() -> None:
    p = params.load(REPO / "params.yaml")
    assert p.distill.ctr.beta == 921.6
    assert p.train.ctr.model.name in ("crossnet", "cin")
    assert p.train.seq.optim.lr == 0.005 and p.data.seq.max_len == 50
    assert isinstance(p.seeds, tuple) and len(p.seeds) >= 1
    assert p.evaluate.sampled_label == f"sampled{p.evaluate.sampled_negatives}"


def _models(cls: type[BaseModel]) -> list[type[BaseModel]]:
    found = [cls]
    for info in cls.model_fields.values():
        for tp in typing.get_args(info.annotation) or (info.annotation,):
            if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in found:
                found += _models(tp)
    return found


def test_params_yaml_is_the_only_source_of_defaults() -> None:
    """No field of the params schema has a default: a key missing from the file is an error."""
    defaults = [f"{cls.__name__}.{name}" for cls in _models(params.Params)
                for name, info in cls.model_fields.items() if not info.is_required()]
    assert defaults == []
    assert len(_models(params.Params)) > 20  # the walk reached the nested blocks


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[leaf] = value


BAD = [
    ("train.ctr.optim.lr", -1, "train.ctr.optim.lr", "> 0"),
    ("train.ctr.optim.lr", "fast", "train.ctr.optim.lr", "a number"),
    ("train.ctr.model", "crossnet", "train.ctr.model", "a mapping"),
    ("train.ctr.bogus", 1, "train.ctr.bogus", "accepted keys here: embed_dim, model, optim"),
    ("train.agnn.optim.epochs", 2.5, "train.agnn.optim.epochs", "an integer"),
    ("train.agnn.optim.epochs", True, "train.agnn.optim.epochs", "an integer"),
    ("data.ctr.neutral", "keep", "data.ctr.neutral", "'drop', 'negative'"),
    ("data.ctr.split.train", 0.5, "data.ctr.split", "sum to 0.7"),
    ("data.coldstart.warm.valid", 0.3, "data.coldstart.warm", "train + valid + test = 1"),
    ("distill.ctr.beta", -5, "distill.ctr.beta", ">= 0"),
    ("distill.seq.temperature", 0, "distill.seq.temperature", "> 0"),
    ("neighbors.top_frac", 1.5, "neighbors.top_frac", "<= 1"),
    ("neighbors.scenarios", ["warm", "hot"], "neighbors.scenarios[1]", "'warm', 'ics', 'ucs'"),
    ("seeds", [], "seeds", "at least one"),
    ("seeds", [1, 1], "seeds", "distinct"),
    ("runtime.device", "tpu", "runtime.device", "'auto', 'cpu', 'cuda'"),
    ("download.timeout_s", 0, "download.timeout_s", "> 0"),
    ("tracking", "mlflow", "tracking", "a mapping with keys experiment"),
    ("evaluate.select.seq", "NDCG@10", "evaluate.select.seq", "a string matching"),
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
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.train.ctr.optim.lr = 1.0  # type: ignore[misc]


def test_audit_records_the_keys_a_process_reads(tmp_path: Path) -> None:
    """With $RECDISTILL_PARAMS_AUDIT set, a process writes the leaf keys it read, a whole
    block for section_dict, and list fields as the list's key; without it, nothing."""
    code = ("from recdistill import params\n"
            f"p = params.load({str(REPO / 'params.yaml')!r})\n"
            "_ = p.seeds\n"  # before audit(): not recorded
            "params.audit(p)\n"
            "_ = p.train.ctr.optim.lr, p.evaluate.sampled_label, [s.url for s in p.download.sources]\n"
            "params.section_dict(p.distill.cf)\n")
    env = os.environ | {params.AUDIT_ENV: str(tmp_path / "audit")}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    [record] = [json.loads(f.read_text()) for f in (tmp_path / "audit").iterdir()]
    assert record["keys"] == ["distill.cf", "download.sources.url", "evaluate.sampled_negatives",
                              "train.ctr.optim.lr"]
    env.pop(params.AUDIT_ENV)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert len(list((tmp_path / "audit").iterdir())) == 1
