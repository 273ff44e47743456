"""The command line every stage script shares: its parser, logging and params.

A stage builds its parser with ``stage_parser(__doc__)`` (its docstring is the ``--help``
text; ``--params`` is added) and, when it trains one seed, ``seeded=True`` (adds
``--seed``). ``parse`` then sets up logging, loads the params and checks that the seed is
one of ``seeds``, so that a typo fails before any work with the key and value named.
``run(main)`` runs the stage: an error the user can mend (:class:`recdistill.errors.UserError`,
a missing file) is printed as one line and exits 1, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from recdistill import params
from recdistill.errors import UserError

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and each option's default after its help (not for flags,
    required options or a default of None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def stage_parser(doc: str | None, *, seeded: bool = False) -> argparse.ArgumentParser:
    """A parser whose help is the stage's docstring, with ``--params`` (and ``--seed``).

    >>> stage_parser("Demo stage.", seeded=True).parse_args(["--seed", "1"]).params
    PosixPath('params.yaml')
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    if seeded:
        parser.add_argument("--seed", type=int, required=True, help="training seed, one of the params' seeds")
    return parser


def parse(parser: argparse.ArgumentParser,
          argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, params.Params]:
    """Parse ``argv``, log at INFO to stderr, load the params; a ``--seed`` outside the
    params' ``seeds`` is a usage error (exit 2) naming both."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    p = params.load(args.params)
    seed = getattr(args, "seed", None)
    if seed is not None and seed not in p.seeds:
        parser.error(f"--seed {seed} is not in seeds {list(p.seeds)} of {args.params}")
    params.audit(p)  # from here on, the keys the stage reads (tests/test_pipeline_e2e.py)
    return args, p


def dvc_params(stage: str, params_file: Path) -> dict[str, Any]:
    r"""The params keys ``dvc.yaml`` (beside ``params_file``) lists for ``stage``, with their
    values in ``params_file``: what the stage's MLflow run logs and hashes, so the run records
    exactly the keys DVC tracks. Read from the files, not through the params object, so
    logging them is not counted as the stage reading them (see ``params.audit``). Outside a
    DVC project (no ``dvc.yaml``) there is nothing to log.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "params.yaml").write_text("a: {b: 1, c: [2, 3]}\nd: 4\n")
    >>> _ = (folder / "dvc.yaml").write_text("stages:\n  s:\n    foreach: [x]\n    do:\n"
    ...                                       "      cmd: python stages/s.py\n      params: [a.c, d]\n")
    >>> dvc_params("s", folder / "params.yaml")
    {'a.c': [2, 3], 'd': 4}
    """
    pipeline = params_file.parent / "dvc.yaml"
    if not pipeline.is_file():
        return {}
    stages = (yaml.safe_load(pipeline.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise UserError(f"{pipeline}: no stage {stage!r} (the stage script and dvc.yaml disagree)")
    body = stages[stage].get("do", stages[stage])
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    for entry in body.get("params", []):
        key = entry if isinstance(entry, str) else next(iter(entry))
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{pipeline}: stage {stage} lists params key {key!r}, which {params_file} lacks")
            node = node[part]
        values[key] = node
    return values


def metrics_line(metrics: Mapping[str, float]) -> str:
    """The test metrics of a stage's last log line, sorted, to 4 decimals.

    >>> metrics_line({"valid/auc": 0.8, "test/logloss": 0.45678, "test/auc": 0.86219})
    'test/auc=0.8622, test/logloss=0.4568'
    """
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`UserError` or a missing file ends it with exit 1 and
    one line on stderr, ``<module>.<class>: <message>`` (the last line a traceback would show)."""
    try:
        main()
    except (UserError, FileNotFoundError) as err:
        kind = type(err)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        print(f"{name}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
