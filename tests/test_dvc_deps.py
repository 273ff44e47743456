"""dvc.yaml deps equal what each stage script imports (ARCHITECTURE.md 3 and 11b), and the
import closure behind that check is right on a tiny hand-made package."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from recdistill import depgraph
from recdistill.depgraph import OK_MESSAGE, check_deps, check_pipeline, closure, needed_deps

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = REPO / "dvc.yaml"


# --- the real pipeline ------------------------------------------------------------------

def test_real_dvc_yaml_deps_match_imports() -> None:
    assert check_pipeline(DVC_YAML) == []


def test_cli_passes_on_the_real_dvc_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert depgraph.main([str(DVC_YAML)]) == 0
    assert capsys.readouterr().out.strip() == OK_MESSAGE


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DVC_YAML.read_text())
    return data


def _deps(dvc: dict[str, Any], stage: str) -> list[str]:
    body = dvc["stages"][stage]
    deps: list[str] = body["do"]["deps"] if "foreach" in body else body["deps"]
    return deps


def _check(tmp_path: Path, dvc: dict[str, Any]) -> list[str]:
    """check_pipeline on an edited copy of dvc.yaml, against the repo's code."""
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(dvc, sort_keys=False))
    return check_pipeline(path, root=REPO)


@pytest.mark.parametrize(("stage", "dep"), [
    ("ctr-teacher", "src/recdistill/params.py"),         # a matrix stage
    ("neighbors", "src/recdistill/coldstart/graphs.py"),  # a foreach stage
    ("seq-popular", "src/recdistill/seq.py"),
    ("prepare", "src/recdistill/data/__init__.py"),      # a package __init__ on the import path
])
def test_deleting_one_dep_line_fails(tmp_path: Path, real: dict[str, Any], stage: str, dep: str) -> None:
    dvc = copy.deepcopy(real)
    _deps(dvc, stage).remove(dep)
    problems = _check(tmp_path, dvc)
    assert problems, f"removing {dep} from {stage} went unnoticed"
    assert all(p.startswith(f"stage {stage}: ") for p in problems), problems
    assert any(f"dvc.yaml deps lack {dep} (imported by " in p for p in problems), problems


def test_deleting_any_src_dep_of_any_stage_fails(real: dict[str, Any]) -> None:
    """Every src dep line is load-bearing: without it, the stage's check names it (a
    directory dep: the files under it)."""
    closures: dict[str, depgraph.Closure] = {}
    for stage, body in depgraph.stages(real).items():
        (script,) = depgraph.stage_script(body)
        found = closures.setdefault(script, closure(script, REPO))
        deps = list(body["deps"])
        for dep in [d for d in deps if d.startswith("src/recdistill/")]:
            problems = check_deps(stage, found, [d for d in deps if d != dep], REPO)
            missing = [p for p in problems if "dvc.yaml deps lack" in p]
            assert missing and len(missing) == len(problems), (stage, dep, problems)
            assert all(p.startswith(f"stage {stage}: dvc.yaml deps lack {dep}") for p in missing), missing


def test_a_superfluous_file_dep_is_reported(tmp_path: Path, real: dict[str, Any]) -> None:
    dvc = copy.deepcopy(real)
    _deps(dvc, "ctr-teacher").append("src/recdistill/seq.py")
    assert _check(tmp_path, dvc) == [
        "stage ctr-teacher: dvc.yaml dep src/recdistill/seq.py is not imported by stages/ctr_train.py "
        "(an edit to it would rerun the stage needlessly)"]


def test_a_directory_dep_wider_than_the_imports_is_reported(tmp_path: Path, real: dict[str, Any]) -> None:
    dvc = copy.deepcopy(real)
    deps = _deps(dvc, "neighbors")
    deps[:] = [d for d in deps if not d.startswith("src/recdistill/coldstart/")] + ["src/recdistill/coldstart"]
    problems = _check(tmp_path, dvc)
    assert problems == [
        f"stage neighbors: dvc.yaml dep src/recdistill/coldstart holds src/recdistill/coldstart/{name}, "
        "which is not imported by stages/coldstart_neighbors.py (an edit to it would rerun the stage needlessly)"
        for name in ("baselines.py", "training.py")]


def test_a_missing_script_dep_is_reported(tmp_path: Path, real: dict[str, Any]) -> None:
    dvc = copy.deepcopy(real)
    _deps(dvc, "evaluate").remove("stages/evaluate.py")
    assert _check(tmp_path, dvc) == ["stage evaluate: dvc.yaml deps lack stages/evaluate.py (the stage's script)"]


def test_show_lists_deps_that_pass_the_check(real: dict[str, Any]) -> None:
    """What ``--show`` prints, pasted as a stage's code deps, passes that stage's check."""
    for stage, body in depgraph.stages(real).items():
        (script,) = depgraph.stage_script(body)
        found = closure(script, REPO)
        assert check_deps(stage, found, [script, *needed_deps(found, REPO)], REPO) == [], stage


def test_fix_rewrites_drifted_code_deps_and_keeps_the_rest(tmp_path: Path) -> None:
    """--fix on a copy whose deps drifted (a line deleted, a wrong one added): the check then
    passes, and the data deps, params, outs and comments are the real file's."""
    text = DVC_YAML.read_text()
    drifted = text.replace("      - src/recdistill/params.py\n", "", 1).replace(
        "      - src/recdistill/cli.py\n", "      - src/recdistill/cli.py\n      - src/recdistill/seq.py\n", 1)
    assert drifted != text
    (tmp_path / "dvc.yaml").write_text(drifted)
    for script in REPO.glob("stages/*.py"):  # the closure is read from the copy's tree
        (tmp_path / "stages").mkdir(exist_ok=True)
        (tmp_path / "stages" / script.name).write_text(script.read_text())
    (tmp_path / "src").symlink_to(REPO / "src")
    assert check_pipeline(tmp_path / "dvc.yaml")
    assert depgraph.main([str(tmp_path / "dvc.yaml"), "--fix"]) == 0
    assert check_pipeline(tmp_path / "dvc.yaml") == []
    assert (tmp_path / "dvc.yaml").read_text() == text  # the real file is already fixed


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    """prepare's script imports cli, tracking, canonical, splits and io; cli brings params and
    errors, and every import runs the package __init__ files on the way."""
    assert depgraph.main([str(DVC_YAML), "--show", "prepare"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "- stages/prepare.py",
        "- src/recdistill/__init__.py",
        "- src/recdistill/cli.py",
        "- src/recdistill/data/__init__.py",
        "- src/recdistill/data/canonical.py",
        "- src/recdistill/data/splits.py",
        "- src/recdistill/errors.py",
        "- src/recdistill/io.py",
        "- src/recdistill/params.py",
        "- src/recdistill/tracking.py",
    ]


def test_cli_fails_with_the_problems(tmp_path: Path, real: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    dvc = copy.deepcopy(real)
    _deps(dvc, "seq-alone").remove("src/recdistill/tracking.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    (tmp_path / "stages").symlink_to(REPO / "stages")
    (tmp_path / "src").symlink_to(REPO / "src")
    assert depgraph.main([str(tmp_path / "dvc.yaml")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "stage seq-alone: dvc.yaml deps lack src/recdistill/tracking.py "
        "(imported by stages/seq_train.py via stages/seq_train.py:24)"]


# --- the closure, on a tiny fake package --------------------------------------------------

FAKE = {
    "src/fakepkg/__init__.py": "CONST = 1\n",
    "src/fakepkg/a.py": (
        "from . import b\n"
        "\n"
        "def lazy() -> None:\n"
        "    from .sub.deep import leaf  # function-level: runs when called, so counted\n"
    ),
    "src/fakepkg/b.py": (
        "from __future__ import annotations\n"
        "import typing\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from fakepkg import typed_only\n"
        "else:\n"
        "    import fakepkg.runtime_only\n"
        "if typing.TYPE_CHECKING:\n"
        "    import fakepkg.typed_only\n"
    ),
    "src/fakepkg/typed_only.py": "",
    "src/fakepkg/runtime_only.py": "",
    "src/fakepkg/c.py": "Y = 2\n",
    "src/fakepkg/unused.py": "import fakepkg.c\n",
    "src/fakepkg/sub/__init__.py": "from .helpers import X\n",
    "src/fakepkg/sub/helpers.py": "from ..c import Y as X\n",
    "src/fakepkg/sub/deep/__init__.py": "",
    "src/fakepkg/sub/deep/leaf.py": "import json\n",
    "src/fakepkg/ns/mod.py": "import os\n",  # a namespace package: no __init__.py
}


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    for rel, text in FAKE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "stages").mkdir()
    return tmp_path


def _closure(root: Path, script: str) -> set[str]:
    (root / "stages" / "run.py").write_text(script)
    found = closure("stages/run.py", root, package="fakepkg")
    assert found.unresolved == []
    return {p.removeprefix("src/fakepkg/") for p in found.files}


def test_nested_package_runs_every_init_on_its_path(fake: Path) -> None:
    assert _closure(fake, "import fakepkg.sub.deep.leaf\n") == {
        "__init__.py", "sub/__init__.py", "sub/helpers.py", "c.py", "sub/deep/__init__.py", "sub/deep/leaf.py"}


def test_from_package_import_submodule_or_name(fake: Path) -> None:
    assert _closure(fake, "from fakepkg import c, CONST\n") == {"__init__.py", "c.py"}
    assert _closure(fake, "from fakepkg.sub.deep import leaf\n") == {
        "__init__.py", "sub/__init__.py", "sub/helpers.py", "c.py", "sub/deep/__init__.py", "sub/deep/leaf.py"}
    assert _closure(fake, "from fakepkg.sub import X\n") == {"__init__.py", "sub/__init__.py", "sub/helpers.py", "c.py"}


def test_relative_imports_and_type_checking_and_function_level(fake: Path) -> None:
    # a: `from . import b` (relative), b: TYPE_CHECKING imports skipped, its else branch kept,
    # a.lazy(): a function-level relative import of sub.deep.leaf, which pulls in sub/ and c.
    assert _closure(fake, "from fakepkg import a\n") == {
        "__init__.py", "a.py", "b.py", "runtime_only.py",
        "sub/__init__.py", "sub/helpers.py", "c.py", "sub/deep/__init__.py", "sub/deep/leaf.py"}


def test_type_checking_import_in_the_script_is_skipped(fake: Path) -> None:
    script = ("from typing import TYPE_CHECKING\n"
              "import fakepkg.c\n"
              "if TYPE_CHECKING:\n"
              "    import fakepkg.unused\n"
              "if not TYPE_CHECKING:\n"
              "    pass\n"
              "else:\n"
              "    import fakepkg.typed_only\n")
    assert _closure(fake, script) == {"__init__.py", "c.py"}


def test_imports_in_functions_classes_and_try_count(fake: Path) -> None:
    script = ("class Stage:\n"
              "    def run(self) -> None:\n"
              "        try:\n"
              "            import fakepkg.sub.helpers as h\n"
              "        except ImportError:\n"
              "            from fakepkg.ns import mod\n")
    assert _closure(fake, script) == {"__init__.py", "sub/__init__.py", "sub/helpers.py", "c.py", "ns/mod.py"}


def test_other_packages_and_script_relative_imports_are_ignored(fake: Path) -> None:
    assert _closure(fake, "import json\nimport fakepkg_other\nfrom fakepkgx import y\nfrom . import c\n") == set()


def test_chain_names_the_imports_that_reach_a_file(fake: Path) -> None:
    (fake / "stages" / "run.py").write_text("import os\nfrom fakepkg import a\n")
    found = closure("stages/run.py", fake, package="fakepkg")
    assert found.via("src/fakepkg/c.py") == (
        "stages/run.py:2 -> src/fakepkg/a.py:4 -> src/fakepkg/sub/__init__.py:1 -> src/fakepkg/sub/helpers.py:1")
    assert found.via("src/fakepkg/b.py") == "stages/run.py:2 -> src/fakepkg/a.py:1"


def test_an_unresolved_package_import_is_a_problem(fake: Path) -> None:
    (fake / "stages" / "run.py").write_text("import fakepkg.gone\n")
    found = closure("stages/run.py", fake, package="fakepkg")
    assert [m for m, _ in found.unresolved] == ["fakepkg.gone"]
    assert check_deps("s", found, ["stages/run.py", "src/fakepkg/__init__.py"], fake, package="fakepkg") == [
        "stage s: stages/run.py:1 imports fakepkg.gone, which is not a module under src/fakepkg"]


def test_check_deps_on_the_fake_package(fake: Path) -> None:
    (fake / "stages" / "run.py").write_text("import fakepkg.sub\n")
    found = closure("stages/run.py", fake, package="fakepkg")
    exact = ["stages/run.py", "src/fakepkg/__init__.py", "src/fakepkg/sub/__init__.py",
             "src/fakepkg/sub/helpers.py", "src/fakepkg/c.py", "data/raw"]
    assert check_deps("s", found, exact, fake, package="fakepkg") == []
    assert needed_deps(found, fake, package="fakepkg") == [
        "src/fakepkg/__init__.py", "src/fakepkg/c.py", "src/fakepkg/sub/__init__.py", "src/fakepkg/sub/helpers.py"]
    # a directory dep that holds files the script never runs (sub/deep/*) is too wide
    wide = ["stages/run.py", "src/fakepkg/__init__.py", "src/fakepkg/sub", "src/fakepkg/c.py"]
    assert check_deps("s", found, wide, fake, package="fakepkg") == [
        f"stage s: dvc.yaml dep src/fakepkg/sub holds src/fakepkg/sub/deep/{f}, which is not imported by "
        "stages/run.py (an edit to it would rerun the stage needlessly)" for f in ("__init__.py", "leaf.py")]


def test_pipeline_with_foreach_and_matrix_stages(fake: Path) -> None:
    (fake / "stages" / "run.py").write_text("from fakepkg.sub.deep import leaf\n")
    (fake / "stages" / "other.py").write_text("from fakepkg import c\n")
    dvc = {"stages": {
        "each": {"foreach": ["x", "y"], "do": {
            "cmd": "python stages/run.py ${item} data/${item}.json",
            "deps": ["stages/run.py", "src/fakepkg/__init__.py", "src/fakepkg/sub", "src/fakepkg/c.py",
                     "data/${item}"]}},
        "grid": {"matrix": {"seed": [1, 2]},
                 "cmd": "python stages/other.py --seed ${item.seed}",
                 "deps": ["stages/other.py", "src/fakepkg/__init__.py", "src/fakepkg/unused.py"]},
    }}
    (fake / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    assert check_pipeline(fake / "dvc.yaml", package="fakepkg") == [
        "stage grid: dvc.yaml deps lack src/fakepkg/c.py (imported by stages/other.py via stages/other.py:1)",
        "stage grid: dvc.yaml dep src/fakepkg/unused.py is not imported by stages/other.py "
        "(an edit to it would rerun the stage needlessly)"]
