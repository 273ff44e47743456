"""End to end: `dvc repro` of the whole pipeline in a temp copy of the repo, offline, on the
tiny synthetic MovieLens-shaped dataset (one seed, two epochs per model).

Checks that every stage runs, that a second repro reruns nothing, that editing one param
or one library file reruns exactly the stages that read or import it, that each stage's
dvc.yaml params are exactly the keys its process read, and that each stage logged one
MLflow run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from synthetic import make, sha256, write_recbole

from recdistill import depgraph, params

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _shrink(tree: Any) -> None:
    """Every training budget down to 2 epochs, patience 1, evaluation each epoch."""
    if isinstance(tree, dict):
        for key in tree:
            if key == "epochs":
                tree[key] = 2
            elif key == "patience":
                tree[key] = 1
            elif key == "eval_every":
                tree[key] = 1
            else:
                _shrink(tree[key])


def _dvc(repo: Path, *args: str, audit: Path | None = None) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
                        "PYTHONUNBUFFERED": "1"}
    env.pop(params.AUDIT_ENV, None)
    if audit is not None:
        env[params.AUDIT_ENV] = str(audit)
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name == "dvc.lock" or name.startswith(("metrics/", "reports/", "plots/")):
            continue
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    data = make(n_users=60, n_items=80, seed=0)
    wheel = write_recbole(data, root.parent / "recbole-synthetic.whl")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["seeds"] = [0]
    params["download"]["sources"] = [{"name": "synthetic", "kind": "file", "url": str(wheel),
                                      "sha256": sha256(wheel)}]
    params["download"]["expect"] = data.counts
    params["evaluate"]["sampled_negatives"] = 20  # a tiny catalogue has fewer unseen items than 100
    _shrink(params["train"])
    _shrink(params["distill"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def first_run(repo: Path) -> str:
    return _dvc(repo, "repro", audit=repo.parent / "params-audit")


def test_repro_builds_everything(repo: Path, first_run: str) -> None:
    stages = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert {"download", "prepare"} <= stages
    assert _ran(first_run) == stages
    manifest = yaml.safe_load((repo / "data/canonical/manifest.json").read_text())
    assert manifest["counts"]["users"] == 60 and manifest["counts"]["items"] == 80
    for name in ("coldstart/warm", "coldstart/ics", "coldstart/ucs", "ctr", "cf", "seq"):
        assert (repo / "data/prepared" / name / "test.parquet").is_file()


def test_second_repro_reruns_nothing(repo: Path, first_run: str) -> None:
    assert _ran(_dvc(repo, "repro")) == set()
    assert "up to date" in _dvc(repo, "status")


def _edit(repo: Path, dotted: str, value: Any) -> Any:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    old, node[leaf] = node[leaf], value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return old


def _stale(repo: Path) -> set[str]:
    return set(json.loads(_dvc(repo, "status", "--json").strip().splitlines()[-1] or "{}"))


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("distill.ctr.beta", 100.0, {"ctr-distill@0"}),
    ("distill.cf.lambda1", 0.5, {"cf-distill@0"}),
    ("distill.seq.temperature", 4.0, {"seq-distill@0"}),
    ("train.agnn.optim.lr", 0.001, {"agnn@warm-0", "agnn@ics-0", "agnn@ucs-0"}),
    ("neighbors.top_frac", 0.2, {"neighbors@warm", "neighbors@ics", "neighbors@ucs"}),
    ("train.ctr.optim.lr", 0.01, {"ctr-teacher@0"}),
    ("train.ctr.embed_dim", 8, {"ctr-teacher@0", "ctr-alone@0"}),  # distill reads the teacher's
    ("evaluate.select.cf", "recall@20", {"cf-meta@0", "cf-distill@0", "cf-alone@0", "evaluate"}),
    # the seq stages draw the labelled sampled-100 negatives from the data seed too
    ("data.seed", 7, {"prepare", "seq-teacher@0", "seq-distill@0", "seq-alone@0", "seq-popular"}),
])
def test_one_param_changes_only_its_readers(repo: Path, first_run: str, key: str, value: Any,
                                            expected: set[str]) -> None:
    """`dvc status` names only the stages that read the key (their dependants follow on repro)."""
    old = _edit(repo, key, value)
    try:
        assert _stale(repo) == expected
    finally:
        _edit(repo, key, old)


def test_editing_beta_reruns_only_distill_its_latency_and_evaluate(repo: Path, first_run: str) -> None:
    old = _edit(repo, "distill.ctr.beta", 100.0)
    try:  # the latency stage times the first seed's checkpoints, and seed 0 is the first
        assert _ran(_dvc(repo, "repro")) == {"ctr-distill@0", "ctr-latency", "evaluate"}
    finally:
        _edit(repo, "distill.ctr.beta", old)


def _lock_stages(repo: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])


def test_dvc_params_are_exactly_what_each_stage_reads(repo: Path, first_run: str) -> None:
    """Every stage process recorded the params keys it read (params.audit); dvc.yaml must list
    exactly those: no read key missing (stale results), no listed key unread (needless reruns)."""
    records = [json.loads(f.read_text()) for f in (repo.parent / "params-audit").glob("*.json")]
    leaves = depgraph.param_leaves(yaml.safe_load((repo / "params.yaml").read_text()))
    problems: list[str] = []
    for name, stage in _lock_stages(repo).items():
        argv = stage["cmd"].split()[1:]  # after "python"
        read = [r["keys"] for r in records if r["argv"] == argv]
        assert len(read) == 1, f"{name}: {len(read)} audit records for {argv}"
        declared = stage.get("params", {}).get("params.yaml", {})
        problems += depgraph.check_params(name, declared, read[0], leaves)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("library_file", ["src/recdistill/params.py", "src/recdistill/tracking.py",
                                          "src/recdistill/data/canonical.py"])
def test_a_code_edit_reruns_exactly_its_importers(repo: Path, first_run: str, library_file: str) -> None:
    """The stages `dvc status` calls stale after an edit are those whose script imports the
    file (derived from the imports, not from dvc.yaml)."""
    expected = {name for name, stage in _lock_stages(repo).items()
                if library_file in depgraph.closure(stage["cmd"].split()[1], repo).files}
    assert expected, f"no stage imports {library_file}"
    path = repo / library_file
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    try:
        assert _stale(repo) == expected
    finally:
        path.write_text(text)


def test_one_mlflow_run_per_stage_execution(repo: Path, first_run: str) -> None:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recdistill")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    names = [r.info.run_name for r in runs]
    assert "download" in names and "prepare" in names
    assert all(r.info.status == "FINISHED" for r in runs)
    download = next(r for r in runs if r.info.run_name == "download")
    # (the temp repo has no commit yet, so no mlflow.source.git.commit: see tests/test_tracking.py)
    assert {"mlflow.source.name", "params.hash", "data.manifest", "dvc.exp", "stage"} <= set(download.data.tags)
    assert download.data.tags["mlflow.source.name"] == "stages/download.py"
    assert download.data.params["download.timeout_s"] == "60"  # the keys dvc.yaml lists


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def test_remote_round_trip_reruns_nothing(repo: Path, first_run: str, tmp_path: Path) -> None:
    """Repro in clone A, push to a local remote; a fresh clone B pulls and reruns nothing."""
    remote = tmp_path / "remote"
    _dvc(repo, "repro")  # bring A up to date after the param edit of the test above
    _dvc(repo, "remote", "add", "-f", "-d", "local", str(remote))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "trained")
    _dvc(repo, "push")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    _dvc(clone, "pull")
    assert "up to date" in _dvc(clone, "status")
    assert _ran(_dvc(clone, "repro")) == set()
    for path in (repo / "models").rglob("model.pt"):
        assert (clone / path.relative_to(repo)).read_bytes() == path.read_bytes()


def test_fresh_clone_rerun_leaves_git_clean(repo: Path, first_run: str, tmp_path: Path) -> None:
    """A fresh clone with no DVC cache retrains every stage and writes the same bytes: no
    wall clock or run id in any tracked file or DVC out, so `git status` stays clean (the
    latency stages do not rerun: their checkpoints are unchanged)."""
    _dvc(repo, "repro")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "trained", "--allow-empty")
    clone = tmp_path / "fresh"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    ran = _ran(_dvc(clone, "repro"))
    assert {"download", "prepare", "ctr-teacher@0"} <= ran and "evaluate" not in ran
    assert not any(stage.endswith("-latency") for stage in ran)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout
    assert status == "", status
