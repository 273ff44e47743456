"""stages/coldstart_neighbors.py: user and item k-NN neighbor lists of one coldstart scenario.

DVC stage ``neighbors@<scenario>`` (ARCHITECTURE §5). Preference proximity comes from the
scenario's train ratings only (validation and test ratings are not an input, so no cold
node's rating can reach a neighbor list); attribute proximity from the canonical users,
items and item attributes tables.

In: ``--canonical`` folder (users, items, attributes .parquet), ``--train`` (the scenario's
train.parquet), params ``neighbors``.
Out: ``OUT`` pickle (plain dicts of numpy arrays; load it with
``recdistill.graph.read_pickle``, which refuses anything else).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from recdistill import cli
from recdistill.coldstart.graphs import build_graph
from recdistill.graph import write_pickle
from recdistill.tracking import stage_run

log = logging.getLogger("coldstart_neighbors")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("scenario", choices=("warm", "ics", "ucs"), help="coldstart scenario")
    parser.add_argument("out", type=Path, help="output pickle, e.g. data/neighbors/ics.pkl")
    parser.add_argument("--canonical", type=Path, required=True, help="folder of the canonical tables")
    parser.add_argument("--train", type=Path, required=True,
                        help="the scenario's train ratings, e.g. data/prepared/coldstart/ics/train.parquet")
    args, p = cli.parse(parser, argv)
    with stage_run("neighbors", args.scenario, track="coldstart", role="data",
                   params=cli.dvc_params("neighbors", args.params), experiment=p.tracking.experiment) as run:
        start = time.perf_counter()
        tables = {name: pd.read_parquet(args.canonical / f"{name}.parquet")
                  for name in ("users", "items", "attributes")}
        train = pd.read_parquet(args.train, columns=["user", "item", "rating"])
        payload = build_graph(args.scenario, train, tables["users"], tables["items"],
                              tables["attributes"], p.neighbors)
        write_pickle(args.out, payload)
        summary = {"seconds": time.perf_counter() - start}
        for side in ("users", "items"):
            g = payload[side]
            summary |= {f"{side}/k": g["neighbors"].shape[1], f"{side}/cold": int((~g["warm"]).sum()),
                        f"{side}/attribute_values": len(g["columns"])}
        run.log_metrics(summary)
    log.info("neighbors@%s -> %s: %s", args.scenario, args.out, summary)


if __name__ == "__main__":
    cli.run(main)
