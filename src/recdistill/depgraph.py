"""Which library files a DVC stage runs, read from its script's imports, and whether
``dvc.yaml`` lists exactly those as the stage's ``deps``.

A stage reruns only when one of its deps changes, so a library file the stage imports but
does not list leaves a stale result cached after a code change, and a listed file it never
imports reruns it for nothing. This module parses the stage script and the package with
:mod:`ast` (nothing is imported) and follows every import of the package:
``import recdistill.x.y``, ``from recdistill.x import y`` (``y`` a submodule or a name),
relative imports inside the package, and imports inside functions. Importing
``recdistill.data.splits`` also runs ``recdistill/__init__.py`` and
``recdistill/data/__init__.py``, so those are in the closure too; imports under
``if TYPE_CHECKING:`` never run and are skipped.

Command line (exit 1 when a stage's deps and imports differ)::

    python -m recdistill.depgraph [dvc.yaml]
    python -m recdistill.depgraph [dvc.yaml] --show ctr-teacher   # the deps to paste
    python -m recdistill.depgraph [dvc.yaml] --fix                # rewrite them in place
"""

from __future__ import annotations

import argparse
import ast
import posixpath
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Closure", "Link", "check_deps", "check_params", "check_pipeline", "closure", "covers",
           "fix_pipeline", "fix_text", "needed_deps", "param_leaves", "stage_script", "stages"]

PACKAGE = "recdistill"
SRC = "src"
OK_MESSAGE = "dvc.yaml deps match the imports of every stage"

_SCRIPT = re.compile(r"(?:^|\s)(?:\./)?(stages/[^\s'\"]+\.py)(?=\s|$)")


@dataclass(frozen=True)
class Link:
    """How a file entered a closure: the import statement at ``line`` of ``importer``."""

    importer: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line}"


@dataclass
class Closure:
    """The package files one script runs.

    Attributes:
        script: the script, repo-relative (``stages/foo.py``).
        files: every package file it runs (repo-relative, ``src/recdistill/x.py``), each with
            the import that first reached it (breadth first, so a shortest chain).
        unresolved: package modules it imports that are not under the source directory,
            each with the import naming it.
    """

    script: str
    files: dict[str, Link] = field(default_factory=dict)
    unresolved: list[tuple[str, Link]] = field(default_factory=list)

    def chain(self, path: str) -> list[Link]:
        """The imports from the script down to ``path``, outermost first."""
        links: list[Link] = []
        while path in self.files:
            link = self.files[path]
            links.append(link)
            path = link.importer
        return links[::-1]

    def via(self, path: str) -> str:
        """The chain as text: ``stages/a.py:3 -> src/recdistill/b.py:9``."""
        return " -> ".join(str(link) for link in self.chain(path))


def _norm(path: str) -> str:
    """A dep or path as dvc.yaml compares it: posix, no ``./``, no trailing slash.

    >>> _norm("./src/recdistill/train/")
    'src/recdistill/train'
    """
    return posixpath.normpath(path.strip()).removeprefix("./")


def covers(dep: str, path: str) -> bool:
    """Whether the dep ``dep`` (a file, or a directory covering all under it) covers ``path``.

    >>> covers("src/recdistill/train", "src/recdistill/train/loop.py")
    True
    >>> covers("src/recdistill/train", "src/recdistill/training.py")
    False
    >>> covers("src/recdistill/io.py", "src/recdistill/io.py")
    True
    """
    dep, path = _norm(dep), _norm(path)
    return path == dep or path.startswith(dep + "/")


def _module_name(rel: str, src: str) -> str:
    """The dotted name of a package file.

    >>> _module_name("src/recdistill/data/__init__.py", "src")
    'recdistill.data'
    >>> _module_name("src/recdistill/data/splits.py", "src")
    'recdistill.data.splits'
    """
    parts = rel.removeprefix(src.rstrip("/") + "/").removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(current: str, is_package: bool, level: int, module: str | None) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` written in ``current``
    (None when it climbs above the top package).

    >>> _resolve_relative("recdistill.data.splits", False, 1, "canonical")
    'recdistill.data.canonical'
    >>> _resolve_relative("recdistill.data", True, 2, "io")
    'recdistill.io'
    >>> _resolve_relative("recdistill.report.specs", False, 1, None)
    'recdistill.report'
    >>> _resolve_relative("recdistill.io", False, 2, None) is None
    True
    """
    parts = current.split(".") if is_package else current.split(".")[:-1]
    if level - 1 >= len(parts):
        return None
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``<anything>.TYPE_CHECKING``."""
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth (functions, classes, try, if):
    the body of ``if TYPE_CHECKING:`` is skipped (its ``else`` kept), and likewise the
    ``else`` of ``if not TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if (isinstance(node, ast.If) and isinstance(node.test, ast.UnaryOp)
                and isinstance(node.test.op, ast.Not) and _is_type_checking(node.test.operand)):
            stack.extend(node.body)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, current: str | None,
             is_package: bool) -> list[tuple[str, bool]]:
    """The modules an import statement names, each with whether it must be a module:
    ``from P import n`` names ``P`` (must) and ``P.n`` (a module only if one exists there).
    A relative import outside a package (``current`` None) names nothing."""
    if isinstance(node, ast.Import):
        return [(alias.name, True) for alias in node.names]
    if node.level:
        if current is None:
            return []
        base = _resolve_relative(current, is_package, node.level, node.module)
        if base is None:
            return []
    else:
        assert node.module is not None  # `from import x` is not Python
        base = node.module
    return [(base, True)] + [(f"{base}.{alias.name}", False) for alias in node.names if alias.name != "*"]


class _Locator:
    """Finds the file a dotted package module runs, under ``root/src``."""

    def __init__(self, root: Path, src: str, package: str) -> None:
        self.root, self.src, self.package = root, src.rstrip("/"), package

    def in_package(self, module: str) -> bool:
        return module.split(".")[0] == self.package

    def exists(self, module: str) -> bool:
        """A module file, a package or a namespace directory."""
        base = self.root / self.src / module.replace(".", "/")
        return base.with_suffix(".py").is_file() or base.is_dir()

    def file(self, module: str) -> str | None:
        """The repo-relative file that runs for ``module``: ``x.py`` or ``x/__init__.py``;
        None for a namespace package (a directory without ``__init__.py``) or nothing."""
        rel = f"{self.src}/{module.replace('.', '/')}"
        if (self.root / f"{rel}.py").is_file():
            return f"{rel}.py"
        if (self.root / rel / "__init__.py").is_file():
            return f"{rel}/__init__.py"
        return None

    def runs(self, module: str) -> list[str]:
        """The files importing ``module`` runs: each enclosing package's ``__init__.py``,
        outermost first, then the module's own file."""
        parts = module.split(".")
        files = (self.file(".".join(parts[:i])) for i in range(1, len(parts) + 1))
        return [f for f in files if f is not None]


def closure(script: str | Path, root: Path, *, src: str = SRC, package: str = PACKAGE) -> Closure:
    """The package files ``script`` runs through its imports, transitively.

    Args:
        script: the script, relative to ``root`` (``stages/foo.py``) or absolute under it.
        root: the repository root.
        src: the source directory holding the package, relative to ``root``.
        package: the top-level package whose imports are followed.

    Returns:
        A :class:`Closure`; its ``files`` are repo-relative posix paths
        (``src/recdistill/params.py``).

    Raises:
        FileNotFoundError: when ``script`` or an imported package file cannot be read.
        SyntaxError: when one does not parse.
    """
    root = Path(root)
    script_path = Path(script)
    rel_script = (script_path.relative_to(root) if script_path.is_absolute() else script_path).as_posix()
    locate = _Locator(root, src, package)
    result = Closure(script=rel_script)
    queue: deque[str] = deque([rel_script])
    while queue:
        rel = queue.popleft()
        in_package = rel != rel_script
        current = _module_name(rel, src) if in_package else None
        is_package = rel.endswith("/__init__.py")
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)
        for node in sorted(_import_nodes(tree), key=lambda n: (n.lineno, n.col_offset)):
            link = Link(rel, node.lineno)
            for module, must in _targets(node, current, is_package):
                if not locate.in_package(module):
                    continue
                if must and not locate.exists(module):
                    result.unresolved.append((module, link))  # its packages still run first
                for path in locate.runs(module):
                    if path not in result.files and path != rel_script:
                        result.files[path] = link
                        queue.append(path)
    return result


def _package_dirs(root: Path, src: str, package: str) -> list[str]:
    """Every directory of the package holding a ``.py`` file, repo-relative, shallow first."""
    top = root / src / package
    dirs = {p.parent for p in top.rglob("*.py")}
    return sorted((d.relative_to(root).as_posix() for d in dirs), key=lambda d: (d.count("/"), d))


def _py_files(root: Path, directory: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / directory).rglob("*.py"))


def needed_deps(found: Closure, root: Path, *, src: str = SRC, package: str = PACKAGE) -> list[str]:
    """The package deps a stage running ``found.script`` needs, sorted: a subpackage
    directory when the script runs every ``.py`` file under it, else the files."""
    needed = set(found.files)
    chosen: list[str] = []
    for directory in _package_dirs(root, src, package):
        if directory == f"{src.rstrip('/')}/{package}" or any(covers(d, directory) for d in chosen):
            continue
        files = _py_files(root, directory)
        if files and all(f in needed for f in files):
            chosen.append(directory)
    rest = [f for f in needed if not any(covers(d, f) for d in chosen)]
    return sorted(chosen + rest)


def _dep_text(dep: Any) -> str:
    """A dep entry as a path (DVC allows ``- path`` and, in old files, ``- path: {...}``)."""
    if isinstance(dep, Mapping):
        return str(next(iter(dep)))
    return str(dep)


def stages(dvc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each stage of a loaded dvc.yaml with the mapping holding its ``cmd`` and ``deps``:
    the ``do`` body of a ``foreach`` stage, the stage itself otherwise (``matrix`` too)."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, stage in (dvc.get("stages") or {}).items():
        if isinstance(stage, Mapping):
            body = stage.get("do", stage) if "foreach" in stage else stage
            out[str(name)] = body if isinstance(body, Mapping) else {}
    return out


def stage_script(body: Mapping[str, Any]) -> list[str]:
    """The ``stages/*.py`` scripts a stage's ``cmd`` (a string or a list) runs.

    >>> stage_script({"cmd": "python stages/seq_train.py teacher --seed ${item.seed} x.json"})
    ['stages/seq_train.py']
    """
    cmd = body.get("cmd", "")
    cmds = cmd if isinstance(cmd, list) else [cmd]
    return [m for c in cmds for m in _SCRIPT.findall(str(c))]


def check_deps(stage: str, found: Closure, deps: Sequence[Any], root: Path, *,
               src: str = SRC, package: str = PACKAGE) -> list[str]:
    """The problems of one stage's ``deps`` against the closure of its script.

    (a) every file the script runs is covered by a dep (a file, or a directory above it);
    (b) no package dep is superfluous: a file dep it does not run, or a directory dep with
    a ``.py`` file it does not run. The script itself must be a dep too. Deps outside the
    package (data, models) are not judged.
    """
    paths = [_norm(_dep_text(d)) for d in deps]
    top = f"{src.rstrip('/')}/{package}"
    problems: list[str] = []
    if found.script not in paths:
        problems.append(f"stage {stage}: dvc.yaml deps lack {found.script} (the stage's script)")
    for module, link in found.unresolved:
        problems.append(f"stage {stage}: {link} imports {module}, which is not a module under {top}")
    for path in found.files:
        if not any(covers(dep, path) for dep in paths):
            problems.append(f"stage {stage}: dvc.yaml deps lack {path} "
                            f"(imported by {found.script} via {found.via(path)})")
    needless = "(an edit to it would rerun the stage needlessly)"
    for dep in paths:
        if not covers(top, dep):
            continue
        if "${" in dep:
            problems.append(f"stage {stage}: dvc.yaml dep {dep} is templated; list library files literally")
        elif (root / dep).is_dir():
            for path in _py_files(root, dep):
                if path not in found.files:
                    problems.append(f"stage {stage}: dvc.yaml dep {dep} holds {path}, which is not "
                                    f"imported by {found.script} {needless}")
        elif not (root / dep).exists():
            problems.append(f"stage {stage}: dvc.yaml dep {dep} does not exist")
        elif dep not in found.files and dep.endswith(".py"):
            problems.append(f"stage {stage}: dvc.yaml dep {dep} is not imported by {found.script} {needless}")
    return problems


def check_pipeline(dvc_yaml: Path, *, root: Path | None = None, src: str = SRC,
                   package: str = PACKAGE) -> list[str]:
    """The problems of every stage of ``dvc_yaml``; empty when each stage's package deps
    are exactly what its script imports. ``root`` is the repository root (default: the
    directory of ``dvc_yaml``)."""
    root = dvc_yaml.resolve().parent if root is None else root
    dvc = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    closures: dict[str, Closure] = {}
    problems: list[str] = []
    for name, body in stages(dvc).items():
        scripts = stage_script(body)
        if len(scripts) != 1:
            problems.append(f"stage {name}: its cmd runs {len(scripts)} stages/*.py scripts, not one")
            continue
        script = scripts[0]
        if not (root / script).is_file():
            problems.append(f"stage {name}: its script {script} does not exist")
            continue
        if script not in closures:
            closures[script] = closure(script, root, src=src, package=package)
        problems += check_deps(name, closures[script], body.get("deps") or [], root, src=src, package=package)
    return problems


def fix_text(text: str, needed: Mapping[str, Sequence[str]]) -> str:
    r"""``dvc.yaml``'s text with each stage's code deps (its ``stages/`` script and package
    paths) replaced by ``needed[stage]``, in place of the first of them; data deps, comments
    and every other line stay as they are.

    >>> text = ("stages:\n  a:\n    cmd: python stages/a.py\n    deps:\n"
    ...         "      - stages/a.py\n      - src/recdistill/old.py\n      - data/x  # input\n"
    ...         "    outs:\n      - out\n")
    >>> print(fix_text(text, {"a": ["stages/a.py", "src/recdistill/new.py"]}), end="")
    stages:
      a:
        cmd: python stages/a.py
        deps:
          - stages/a.py
          - src/recdistill/new.py
          - data/x  # input
        outs:
          - out
    """
    out: list[str] = []
    stage: str | None = None
    in_deps, written = False, False
    for line in text.splitlines(keepends=True):
        body = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        header = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if header:
            stage, in_deps, written = header.group(1), False, False
        elif body.startswith("deps:"):
            in_deps, written = True, False
        elif in_deps and body.startswith("- "):
            path = body[2:].split("#")[0].strip()
            if stage is not None and stage in needed and path.startswith(("stages/", f"{SRC}/{PACKAGE}")):
                if not written:
                    out += [f"{' ' * indent}- {dep}\n" for dep in needed[stage]]
                    written = True
                continue
        elif in_deps and body and not body.startswith("#"):
            in_deps = False  # the next key of the stage
        out.append(line)
    return "".join(out)


def fix_pipeline(dvc_yaml: Path) -> None:
    """Rewrite every stage's code deps in ``dvc_yaml`` to what its script imports (atomically)."""
    root = dvc_yaml.resolve().parent
    needed: dict[str, list[str]] = {}
    for name, body in stages(yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).items():
        scripts = stage_script(body)
        if len(scripts) == 1 and (root / scripts[0]).is_file():
            found = closure(scripts[0], root)
            needed[name] = [found.script, *needed_deps(found, root)]
    fixed = fix_text(dvc_yaml.read_text(encoding="utf-8"), needed)
    tmp = dvc_yaml.with_name(f".{dvc_yaml.name}.tmp")
    tmp.write_text(fixed, encoding="utf-8")
    tmp.replace(dvc_yaml)


NOT_IDENTITY = ("runtime.device", "runtime.threads", "tracking")  # where a stage runs, not what it computes


def param_leaves(tree: Any, prefix: str = "") -> set[str]:
    """The dotted keys of ``params.yaml``'s values (a list is one value).

    >>> sorted(param_leaves({"a": {"b": 1, "c": [1, 2]}, "d": 3}))
    ['a.b', 'a.c', 'd']
    """
    if not isinstance(tree, Mapping):
        return {prefix}
    return {leaf for key, value in tree.items()
            for leaf in param_leaves(value, f"{prefix}.{key}" if prefix else str(key))}


def _leaves_of(key: str, leaves: set[str]) -> set[str]:
    """The values a key names: those under it, or the one it lies within (a list's field)."""
    under = {leaf for leaf in leaves if leaf == key or leaf.startswith(key + ".")}
    return under or {leaf for leaf in leaves if key.startswith(leaf + ".")}


def check_params(stage: str, declared: Iterable[str], read: Iterable[str], leaves: set[str]) -> list[str]:
    """Problems between the params keys ``dvc.yaml`` lists for ``stage`` and the keys the
    stage's process read (recorded by :func:`recdistill.params.audit`): a value read but not
    listed leaves a stale result cached after an edit; a listed key none of whose values is
    read reruns the stage for nothing. (A listed block may hold a value the stage does not
    read, e.g. ``data.cf.split.test``, implied by train and valid.) ``runtime.device``,
    ``runtime.threads`` and ``tracking.*`` are not a stage's identity (``runtime.amp`` is:
    mixed precision changes the numbers).

    >>> leaves = {"train.lr", "train.depth", "seeds", "data.seed", "runtime.threads"}
    >>> check_params("s", ["train", "data"], ["train.lr", "runtime.threads"], leaves)
    ['stage s: dvc.yaml params list data, which the stage never reads (an edit would rerun it needlessly)']
    >>> check_params("s", ["train.lr"], ["train.lr", "seeds"], leaves)
    ['stage s: dvc.yaml params lack seeds, which the stage reads']
    """
    wanted = {leaf for key in read if not key.startswith(NOT_IDENTITY) for leaf in _leaves_of(key, leaves)}
    listed = list(declared)
    covered = {leaf for key in listed for leaf in _leaves_of(key, leaves)}
    problems = [f"stage {stage}: dvc.yaml params lack {leaf}, which the stage reads"
                for leaf in sorted(wanted - covered)]
    return problems + [f"stage {stage}: dvc.yaml params list {key}, which the stage never reads "
                       "(an edit would rerun it needlessly)"
                       for key in listed if not _leaves_of(key, leaves) & wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recdistill.depgraph``: print the problems (1) or that all match (0);
    ``--show STAGE`` prints the script and package deps that stage needs."""
    parser = argparse.ArgumentParser(prog="python -m recdistill.depgraph", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dvc_yaml", nargs="?", type=Path, default=Path("dvc.yaml"), help="the pipeline file")
    parser.add_argument("--show", metavar="STAGE", help="print the deps STAGE's script needs, to paste")
    parser.add_argument("--fix", action="store_true",
                        help="rewrite every stage's code deps in the file to what its script imports")
    args = parser.parse_args(argv)
    if not args.dvc_yaml.is_file():
        parser.error(f"{args.dvc_yaml} is not a file")
    if args.fix:
        fix_pipeline(args.dvc_yaml)
    if args.show is None:
        problems = check_pipeline(args.dvc_yaml)
        print("\n".join(problems) if problems else OK_MESSAGE)
        return 1 if problems else 0
    root = args.dvc_yaml.resolve().parent
    body = stages(yaml.safe_load(args.dvc_yaml.read_text(encoding="utf-8")) or {}).get(args.show)
    if body is None:
        parser.error(f"no stage {args.show!r} in {args.dvc_yaml}")
    scripts = stage_script(body)
    if len(scripts) != 1:
        parser.error(f"stage {args.show}: its cmd runs {len(scripts)} stages/*.py scripts, not one")
    found = closure(scripts[0], root)
    for dep in [found.script, *needed_deps(found, root)]:
        print(f"- {dep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
