"""Bad params.yaml: one ParamsError naming the key path, before any work, nothing touched.

In-process: every case of paramcases.generate() (walked from the dataclasses of
recdistill.params: unknown keys, wrong types, out-of-range values, unknown names, missing
keys, cross-field rules) must raise exactly ParamsError whose message names the key path.
As a user runs them: every stage of dvc.yaml, started with a params.yaml that breaks a key
that stage reads, exits nonzero with that ParamsError before it writes anything or opens an
MLflow run; download and prepare leave their previous outputs byte-identical.
"""

from __future__ import annotations

import copy
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import relkit
import yaml
from paramcases import BOGUS, DELETE, Case, counts, generate

from recdistill import params

CASES = generate()
KINDS = ("unknown", "type", "range", "choice", "missing", "cross")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return relkit.repo_params()


def apply(raw: dict[str, Any], case: Case) -> Any:
    if case.path == "":
        return case.value
    tree = copy.deepcopy(raw)
    if case.value is DELETE:
        relkit.delete_path(tree, case.path)
    else:
        relkit.set_path(tree, case.path, case.value)
    return tree


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_generated_case_names_its_key(raw: dict[str, Any], case: Case) -> None:
    with pytest.raises(params.ParamsError) as err:
        params.parse(apply(raw, case))
    assert type(err.value) is params.ParamsError
    assert case.named in str(err.value), str(err.value)
    if case.kind == "unknown":
        assert "accepted keys here" in str(err.value)
    if case.kind == "choice":
        assert "one of" in str(err.value)  # the accepted names are listed


def test_every_section_and_kind_is_covered() -> None:
    """The generator reaches every section of params.yaml; the counts go to docs/reliability.md."""
    table = counts(CASES)
    sections = set(params.Params.model_fields)
    assert sections | {"<file>"} == set(table)
    for section in sections:
        assert table[section]["type"] >= 1, section
        if section != "seeds":  # a list, not a mapping
            assert table[section]["unknown"] >= 1, section
    assert sum(table[s]["range"] for s in table) >= 100
    print(f"\nbad-params cases: {len(CASES)} in-process "
          + ", ".join(f"{k}={sum(c[k] for c in table.values())}" for k in KINDS))


def test_message_shows_value_and_accepted(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["train"]["ctr"]["optim"]["lr"] = -0.001
    with pytest.raises(params.ParamsError) as err:
        params.parse(bad)
    assert str(err.value) == "params.yaml: train.ctr.optim.lr = -0.001 is invalid: expected a value > 0"


# ---------------------------------------------------------------- file-level faults
def test_file_level_faults(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "params.yaml"
    with pytest.raises(params.ParamsError, match=re.escape(str(missing))):
        params.load(missing)
    for text in ("train: [unclosed\n", "a: b: c\n", "\tseeds: [0]\n"):
        path = tmp_path / "params.yaml"
        path.write_text(text)
        with pytest.raises(params.ParamsError) as err:
            params.load(path)
        assert type(err.value) is params.ParamsError and str(path) in str(err.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(params.ParamsError, match="<top level>"):
        params.load(empty)


# Values the schema's bounds do not describe but that break a stage later (requests.md,
# "reliability R1"): each should be a ParamsError naming the key, before any work.
GAPS = [
    ("train.ctr.optim.lr", math.inf, "train.ctr.optim.lr"),  # .inf passes `gt=0`
    ("distill.ctr.beta", math.inf, "distill.ctr.beta"),
    ("neighbors.temperature", math.inf, "neighbors.temperature"),
    ("train.ctr.optim.lr", 10**400, "train.ctr.optim.lr"),  # a 400-digit YAML int: OverflowError, not ParamsError
    ("data.seed", -1, "data.seed"),  # numpy SeedSequence rejects it inside prepare
    ("seeds", [-1], "seeds"),
    ("evaluate.ks", [], "evaluate.ks"),  # ranking_metrics: max() of an empty sequence
    ("evaluate.ks", [0], "evaluate.ks"),  # ranking_metrics: RuntimeError on a (U, 0) top-k
    ("evaluate.ks", [10, 10], "evaluate.ks"),
    ("neighbors.scenarios", [], "neighbors.scenarios"),  # dvc foreach over nothing
    ("tracking.experiment", "", "tracking.experiment"),
    ("evaluate.select.cf", "", "evaluate.select.cf"),
]


@pytest.mark.parametrize(("key", "value", "named"), GAPS, ids=[f"{k}={v!r}"[:60] for k, v, _ in GAPS])
def test_gap_rejected_before_work(raw: dict[str, Any], key: str, value: Any, named: str) -> None:
    bad = copy.deepcopy(raw)
    relkit.set_path(bad, key, value)
    with pytest.raises(params.ParamsError) as err:
        params.parse(bad)
    assert type(err.value) is params.ParamsError and named in str(err.value)


@pytest.mark.parametrize(("head", "named"), [
    (b"seeds: [5]\n", "seeds"),  # the file's own `seeds:` below silently wins
    (b"# caf\xe9 (a comment saved as Latin-1)\n", "params.yaml"),
], ids=["duplicate-key", "latin1-bytes"])
def test_file_gap(tmp_path: Path, raw: dict[str, Any], head: bytes, named: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(head + yaml.safe_dump(raw, sort_keys=False).encode())
    with pytest.raises(params.ParamsError) as err:
        params.load(path)
    assert type(err.value) is params.ParamsError and named in str(err.value)


# ---------------------------------------------------------------- as a user runs the stages
def _lookup(context: dict[str, Any], expr: str) -> Any:
    node: Any = context
    for token in relkit.tokens(expr):
        node = node[token]
    return node


def _resolve(text: str, context: dict[str, Any]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(context, m.group(1).strip())), text)


def _first(value: Any, context: dict[str, Any]) -> Any:
    values = _lookup(context, value[2:-1]) if isinstance(value, str) else value
    return values[0]


def dvc_stages(raw: dict[str, Any]) -> list[tuple[str, list[str], list[str]]]:
    """(stage, argv with absolute script path, params keys) for one item of every dvc.yaml stage."""
    spec = yaml.safe_load((relkit.REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in spec.items():
        context = dict(raw)
        if "foreach" in stage:
            context["item"] = _first(stage["foreach"], raw)
            stage = stage["do"]
        elif "matrix" in stage:
            context["item"] = {k: _first(v, raw) for k, v in stage["matrix"].items()}
        argv = shlex.split(_resolve(stage["cmd"], context))
        assert argv[0] == "python" and argv[1].startswith("stages/"), argv
        keys = [k if isinstance(k, str) else next(iter(k)) for k in stage.get("params", [])]
        out.append((name, [str(relkit.REPO / argv[1]), *argv[2:]], keys))
    return out


def first_leaf(raw: dict[str, Any], key: str) -> str:
    """A scalar or list leaf at or under ``key`` (``train.agnn`` -> ``train.agnn.embed_dim``)."""
    node = _lookup(raw, key)
    while isinstance(node, dict):
        child = next(iter(node))
        key, node = f"{key}.{child}", node[child]
    return key


def stage_cases(raw: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    cases = []
    for name, argv, keys in dvc_stages(raw):
        leaf = first_leaf(raw, keys[0]) if keys else f"neighbors.{BOGUS}"
        cases.append((name, argv, leaf))
    return cases


@pytest.mark.slow
def test_every_stage_refuses_bad_params_before_any_work(raw: dict[str, Any], tmp_path: Path) -> None:
    """Each dvc.yaml stage, run in an empty folder with a params.yaml whose key (one that the
    stage reads) holds a mapping, fails with ParamsError naming it; nothing is created."""
    cases = stage_cases(raw)
    assert len(cases) >= 10, cases

    def job(name: str, argv: list[str], leaf: str):  # noqa: ANN202
        cwd = tmp_path / name
        cwd.mkdir()
        bad = copy.deepcopy(raw)
        relkit.set_path(bad, leaf, {"oops": 1})
        relkit.write_yaml(cwd / "params.yaml", bad)
        store = tmp_path / f"{name}.db"
        return relkit.run(argv, cwd, store, timeout=120), cwd, store

    results = relkit.run_many([lambda c=c: job(*c) for c in cases])
    for (name, _, leaf), (proc, cwd, store) in zip(cases, results, strict=True):
        # a stage that reads no key (ctr-latency) is given an unknown one: named without its value
        value = () if leaf.endswith(BOGUS) else ("{'oops': 1}",)
        relkit.assert_fails_with(proc, params.ParamsError, leaf, *value)
        assert sorted(p.name for p in cwd.iterdir()) == ["params.yaml"], (name, list(cwd.rglob("*")))
        assert not store.exists(), f"{name} opened an MLflow store before validating params"
    print(f"\nbad-params stage runs: {len(cases)} stages ({', '.join(c[0] for c in cases)})")


@pytest.mark.slow
@pytest.mark.parametrize(("script", "key", "value", "named"), [
    ("download.py", "download.expect.ratings", -5, "download.expect.ratings"),
    ("download.py", "download.sources[0].kind", "ftp", "download.sources[0].kind"),
    ("prepare.py", "data.ctr.split.train", 0.5, "data.ctr.split"),
    ("prepare.py", f"data.cf.{BOGUS}", 1, f"data.cf.{BOGUS}"),
], ids=["download-range", "download-choice", "prepare-fractions", "prepare-unknown"])
def test_stage_keeps_previous_outputs(workspace: Path, tmp_path: Path, store: Path, script: str,
                                      key: str, value: Any, named: str) -> None:
    """With outputs of an earlier run in place, a bad params file leaves them byte-identical."""
    args = (["data/canonical"] if script == "download.py"
            else ["data/canonical", "data/prepared", "metrics/prepare.json"])
    outs = ["data/canonical", "data/prepared", "metrics/prepare.json"]
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    bad = yaml.safe_load((ws / "params.yaml").read_text())
    relkit.set_path(bad, key, value)
    relkit.write_yaml(ws / "params.yaml", bad)
    before = {out: relkit.snapshot(ws / out) for out in outs}
    proc = relkit.run([relkit.stage(script), *args], ws, store)
    relkit.assert_fails_with(proc, params.ParamsError, named)
    assert {out: relkit.snapshot(ws / out) for out in outs} == before
    for out in outs:
        assert relkit.stray_temps((ws / out).parent) == []
    assert relkit.mlflow_runs(store) == []
