"""Untrusted artifacts (pulled from a DVC remote nobody vetted) are refused, never executed.

Checkpoints go through recdistill.train.load_checkpoint (torch.load with weights_only=True);
neighbor pickles through recdistill.graph.read_pickle (a restricted unpickler). Every payload
here would run ``touch <marker>`` when unpickled normally (the control tests prove it); the
loaders must raise their own error and the marker must not appear. A static scan checks that
no code path under src/ or stages/ loads pickles, YAML or code any other way.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import relkit
import torch
from torch import nn

from recdistill.graph import UnsafePickleError, read_pickle, write_pickle
from recdistill.train import CheckpointError, load_checkpoint, save_checkpoint


class Shell:
    """Unpickling it runs a shell command (os.system), as a malicious artifact would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class Spawn:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (self.argv,))


class Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def raw_global_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 opcodes calling ``module.name(arg)`` (what a hand-made exploit looks like)."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def touch(marker: Path) -> str:
    return f"touch {marker}"


# ---------------------------------------------------------------- checkpoints
def _ckpt_meta(d: Path, m: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": {"epoch": Shell(touch(m))}}, d / "meta.pt")
    return d / "meta.pt"


def _ckpt_state(d: Path, m: Path) -> Path:
    torch.save({"state_dict": {"w": Shell(touch(m))}, "meta": {}}, d / "state.pt")
    return d / "state.pt"


def _ckpt_popen(d: Path, m: Path) -> Path:
    torch.save({"state_dict": {}, "meta": Spawn(["touch", str(m)])}, d / "popen.pt")
    return d / "popen.pt"


def _ckpt_exec(d: Path, m: Path) -> Path:
    code = f"open({str(m)!r}, 'w').close()"
    torch.save({"state_dict": {}, "meta": Exec(code)}, d / "exec.pt")
    return d / "exec.pt"


def _ckpt_module(d: Path, m: Path) -> Path:
    torch.save(nn.Linear(2, 2), d / "module.pt")  # a whole pickled nn.Module, not a state_dict
    return d / "module.pt"


def _ckpt_legacy(d: Path, m: Path) -> Path:
    (d / "legacy.pt").write_bytes(pickle.dumps(Shell(touch(m)), protocol=2))  # not a zip at all
    return d / "legacy.pt"


def _ckpt_swapped_pickle(d: Path, m: Path) -> Path:
    """A valid checkpoint whose data.pkl was replaced by a hand-made os.system call."""
    good = d / "good.pt"
    save_checkpoint(good, {"w": torch.ones(3)}, {"model": "x"})
    out = d / "swapped.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = raw_global_pickle("os", "system", touch(m))
            zout.writestr(info, data)
    return out


CHECKPOINTS: dict[str, Callable[[Path, Path], Path]] = {
    "os.system-in-meta": _ckpt_meta, "os.system-in-state": _ckpt_state,
    "subprocess.Popen": _ckpt_popen, "builtins.exec": _ckpt_exec, "pickled-nn.Module": _ckpt_module,
    "legacy-raw-pickle": _ckpt_legacy, "zip-with-swapped-data.pkl": _ckpt_swapped_pickle,
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_checkpoint_with_code_is_refused(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = CHECKPOINTS[name](tmp_path, marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert type(err.value) is CheckpointError
    assert str(path) in str(err.value) and "weights_only=True" in str(err.value)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("name", ["os.system-in-meta", "legacy-raw-pickle", "zip-with-swapped-data.pkl"])
def test_control_payload_runs_when_loaded_unsafely(tmp_path: Path, name: str) -> None:
    """Without weights_only the same file executes its command: the refusals above are real."""
    marker = tmp_path / "pwned"
    path = CHECKPOINTS[name](tmp_path, marker)
    try:
        torch.load(path, weights_only=False)  # the unsafe way, on purpose
    except Exception:  # noqa: BLE001  (the payload's return value may not unpickle further)
        pass
    assert marker.exists()


def test_refusal_does_not_advise_unsafe_load(tmp_path: Path) -> None:
    path = _ckpt_meta(tmp_path, tmp_path / "pwned")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "posix.system" in str(err.value)  # says what was refused
    assert "will likely succeed" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-checkpoint"])
def test_damaged_checkpoint_names_the_file(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.ones(3)}, {"model": "x"})
    path = tmp_path / f"{damage}.pt"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.ones(2)}, path)  # loads safely, but no state_dict/meta
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert type(err.value) is CheckpointError and str(path) in str(err.value)


@pytest.mark.slow
def test_track_stages_refuse_an_evil_teacher(workspace: Path, tmp_path: Path) -> None:
    """ctr-distill, cf-distill and seq-distill handed a teacher checkpoint that runs code."""
    marker = tmp_path / "pwned"
    evil = _ckpt_meta(tmp_path, marker)
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    prepared = "data/prepared"
    cases = {
        "ctr": ([relkit.stage("ctr_train.py"), "student", "--seed", "0", "--prepared", f"{prepared}/ctr",
                 "--canonical", "data/canonical", "--teacher", evil, "--out", "models/ctr/distilled-s0",
                 "--metrics", "metrics/ctr/distilled-s0.json"], CheckpointError),
        "cf": ([relkit.stage("cf_train.py"), "student", f"{prepared}/cf", "models/cf/distilled-s0",
                "metrics/cf/distilled-s0.json", "--seed", "0", "--teacher", evil], CheckpointError),
        "seq": ([relkit.stage("seq_train.py"), "student", "--seed", "0", "--data", f"{prepared}/seq",
                 "--items", "data/canonical/items.parquet", "--teacher", evil,
                 "models/seq/distilled-s0", "metrics/seq/distilled-s0.json"], CheckpointError),
    }
    stores = {track: relkit.seeded_store(tmp_path / f"{track}.db") for track in cases}
    procs = relkit.run_many([lambda a=argv, t=track: relkit.run(a, ws, stores[t])
                             for track, (argv, _) in cases.items()])
    for (track, (_, error)), proc in zip(cases.items(), procs, strict=True):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]  # one line
        relkit.assert_fails_with(proc, error, str(evil), "could not be loaded safely (weights_only=True)")
        assert not (ws / "models").exists(), f"{track} wrote outputs"
    assert not marker.exists(), "the payload ran"


# ---------------------------------------------------------------- neighbor pickles
NEIGHBOR_PAYLOADS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "os.system": (lambda m: pickle.dumps({"users": Shell(touch(m))}, protocol=4), "posix.system"),
    "raw-os.system": (lambda m: raw_global_pickle("os", "system", touch(m)), "os.system"),
    "builtins.eval": (lambda m: raw_global_pickle("builtins", "eval", f"open({str(m)!r},'w')"),
                      "builtins.eval"),
    "builtins.exec": (lambda m: pickle.dumps([Exec(f"open({str(m)!r}, 'w').close()")], protocol=2),
                      "__builtin__.exec"),  # protocol 2 spells builtins the Python 2 way
    "subprocess.Popen": (lambda m: pickle.dumps(Spawn(["touch", str(m)]), protocol=4),
                         "subprocess.Popen"),
    "numpy.load": (lambda m: raw_global_pickle("numpy", "load", str(m)), "numpy.load"),
    "a class (OrderedDict)": (lambda m: pickle.dumps(__import__("collections").OrderedDict(a=1)),
                              "collections.OrderedDict"),
}


@pytest.mark.parametrize("name", list(NEIGHBOR_PAYLOADS))
def test_neighbor_pickle_with_code_is_refused(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    build, global_name = NEIGHBOR_PAYLOADS[name]
    path = tmp_path / "ics.pkl"
    path.write_bytes(build(marker))
    with pytest.raises(UnsafePickleError) as err:
        read_pickle(path)
    assert type(err.value) is UnsafePickleError
    assert f"refusing to load global {global_name}" in str(err.value)
    assert not marker.exists(), "the payload ran"


def test_control_neighbor_payload_runs_with_plain_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pickle.loads(NEIGHBOR_PAYLOADS["raw-os.system"][0](marker))  # the unsafe way, on purpose
    assert marker.exists()


def test_neighbor_round_trip_still_works(tmp_path: Path) -> None:
    import numpy as np
    payload = {"format": 1, "users": {"neighbors": np.arange(6).reshape(2, 3), "cols": ["a=1"]}}
    write_pickle(tmp_path / "ok.pkl", payload)
    back = read_pickle(tmp_path / "ok.pkl")
    assert back["users"]["neighbors"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("damage", ["evil", "truncated"])
def test_neighbor_error_names_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "ucs.pkl"
    if damage == "evil":
        path.write_bytes(raw_global_pickle("os", "system", "true"))
    else:
        write_pickle(path, {"a": [1, 2, 3]})
        path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(pickle.UnpicklingError) as err:  # UnsafePickleError is one
        read_pickle(path)
    assert str(path) in str(err.value)


@pytest.mark.slow
def test_agnn_stage_refuses_an_evil_neighbor_file(workspace: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    evil = ws / "data/neighbors/warm.pkl"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps({"format": 1, "users": Shell(touch(marker))}, protocol=4))
    proc = relkit.run([relkit.stage("coldstart_agnn.py"), "warm", "--seed", "0", "--graph",
                       "data/neighbors/warm.pkl", "--split", "data/prepared/coldstart/warm", "--out",
                       "models/coldstart/agnn-warm-s0", "--metrics", "metrics/coldstart/agnn-warm-s0.json"],
                      ws, tmp_path / "mlflow.db")
    relkit.assert_fails_with(proc, UnsafePickleError, "refusing to load global posix.system")
    assert not marker.exists() and not (ws / "models").exists()


# ---------------------------------------------------------------- static scan
SCANNED = [*sorted((relkit.REPO / "src").rglob("*.py")), *sorted((relkit.REPO / "stages").glob("*.py"))]
PICKLE_HOME = relkit.REPO / "src/recdistill/graph/store.py"  # the restricted unpickler


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


FORBIDDEN = frozenset({
    "eval", "exec", "compile", "builtins.eval", "builtins.exec", "os.system", "os.popen",
    "marshal.loads", "yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "pandas.read_pickle",
    "joblib.load", "dill.load", "dill.loads", "shelve.open", "torch.jit.load"})
PICKLE_CALLS = frozenset({"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.loads"})


def scan(path: Path) -> list[str]:
    """Unsafe loading or execution in one source file, as 'file:line: what'."""
    problems = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    safe_loaders = {"SafeLoader", "CSafeLoader"} | {  # and classes here that extend them
        node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
        and any(_dotted(b).split(".")[-1] in ("SafeLoader", "CSafeLoader") for b in node.bases)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.name}:{node.lineno}"
        if name.endswith("torch.load"):
            flag = _kw(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        if name in FORBIDDEN:
            problems.append(f"{where}: {name}()")
        if name == "yaml.load":
            loader = _kw(node, "Loader")
            if loader is None or _dotted(loader).split(".")[-1] not in safe_loaders:
                problems.append(f"{where}: yaml.load without SafeLoader")
        if name in ("np.load", "numpy.load"):
            allow = _kw(node, "allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                problems.append(f"{where}: numpy.load(allow_pickle=True)")
        if name in PICKLE_CALLS and path != PICKLE_HOME:
            problems.append(f"{where}: {name}() outside the restricted unpickler")
        shell = _kw(node, "shell")
        if name.startswith("subprocess.") and isinstance(shell, ast.Constant) and shell.value is True:
            problems.append(f"{where}: {name}(shell=True)")
    return problems


def test_no_unsafe_loading_anywhere() -> None:
    assert len(SCANNED) >= 30
    problems = [p for path in SCANNED for p in scan(path)]
    assert problems == []
    print(f"\nstatic scan: {len(SCANNED)} files under src/ and stages/, no unsafe load or exec")


def test_scanner_catches_what_it_claims(tmp_path: Path) -> None:
    """The scanner itself, on a file made of the patterns it forbids (and two allowed ones)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch, pickle, yaml, subprocess, numpy as np\n"
                     "torch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\neval('1')\n"
                     "pickle.loads(b'')\nyaml.load('a: 1')\nnp.load('x.npy', allow_pickle=True)\n"
                     "subprocess.run('ls', shell=True)\nyaml.load('a', Loader=yaml.SafeLoader)\n"
                     "torch.load('m.pt', weights_only=True)\n"
                     "class Unique(yaml.SafeLoader): pass\nyaml.load('a', Loader=Unique)\n"
                     "class Evil(yaml.Loader): pass\nyaml.load('a', Loader=Evil)\n")
    found = scan(probe)
    assert [f.split(":")[1] for f in found] == ["2", "3", "4", "5", "6", "7", "8", "14"], found
