"""The command line every stage script shares: its parser, logging and params.

A stage builds its parser with ``stage_parser(__doc__)`` (its docstring is the ``--help``
text; ``--params`` is added) and, when it trains one seed, ``seeded=True`` (adds
``--seed``). ``parse`` then sets up logging, loads the params and checks that the seed is
one of ``seeds``, so that a typo fails before any work with the key and value named.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from recdistill import params

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def stage_parser(doc: str | None, *, seeded: bool = False) -> argparse.ArgumentParser:
    """A parser whose help is the stage's docstring, with ``--params`` (and ``--seed``).

    >>> stage_parser("Demo stage.", seeded=True).parse_args(["--seed", "1"]).params
    PosixPath('params.yaml')
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file (default: %(default)s)")
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
    return args, p
