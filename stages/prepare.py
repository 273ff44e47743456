"""Stage prepare: seeded splits for every track.

In: CANONICAL_DIR (download stage). Out: OUT_DIR/<split>/{train,valid,test}.parquet for
coldstart/{warm,ics,ucs}, ctr, cf and seq, plus SUMMARY_JSON (sizes and cold-node counts,
a DVC metric).
"""

from __future__ import annotations

import logging
from pathlib import Path

from recdistill import cli, tracking
from recdistill.data.canonical import load_canonical
from recdistill.data.splits import make_all
from recdistill.io import atomic_path, write_json

log = logging.getLogger("prepare")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("canonical_dir", type=Path, help="folder of the canonical tables (data/canonical)")
    parser.add_argument("out_dir", type=Path, help="folder of the splits, one subfolder each (data/prepared)")
    parser.add_argument("summary_json", type=Path, help="split sizes and checks (metrics/prepare.json)")
    args, p = cli.parse(parser, argv)
    with tracking.stage_run("prepare", "", track="data", role="data", params=cli.dvc_params("prepare", args.params),
                            experiment=p.tracking.experiment) as run:
        c = load_canonical(args.canonical_dir)
        splits = make_all(c.ratings, len(c.users), len(c.items), p.data)
        summary: dict[str, dict[str, int]] = {}
        with atomic_path(args.out_dir) as tmp:
            for name, split in splits.items():
                (tmp / name).mkdir(parents=True)
                for part in ("train", "valid", "test"):
                    getattr(split, part).to_parquet(tmp / name / f"{part}.parquet", index=False)
                summary[name] = split.sizes()
            for name, column in (("coldstart/ics", "item"), ("coldstart/ucs", "user")):
                summary[name][f"cold_{column}s_valid"] = int(splits[name].valid[column].nunique())
                summary[name][f"cold_{column}s_test"] = int(splits[name].test[column].nunique())
            summary["seq"]["users"] = int(splits["seq"].test["user"].nunique())
            summary["catalog"] = {"users": len(c.users), "items": len(c.items)}
            write_json(tmp / "summary.json", summary)
        write_json(args.summary_json, summary)
        run.log_metrics({f"{name}/{k}": v for name, sizes in summary.items() for k, v in sizes.items()})
        log.info("wrote the splits to %s; their sizes are in %s", args.out_dir, args.summary_json)


if __name__ == "__main__":
    cli.run(main)
