"""Stage download: fetch ML-100K, verify it and write the canonical tables.

In: the sources of ``download`` in params.yaml (network, or archives placed by hand in
data/external/). Out: OUT_DIR/{ratings,users,items,attributes}.parquet + manifest.json.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from recdistill import cli, tracking
from recdistill.data.canonical import write_canonical
from recdistill.data.download import acquire

log = logging.getLogger("download")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("out_dir", type=Path, help="directory for the canonical tables")
    parser.add_argument("--manual-dir", type=Path, default=Path("data/external"),
                        help="archives placed here by hand are used before any network access")
    args, p = cli.parse(parser, argv)
    cfg = p.download
    with tracking.stage_run("download", "", track="data", role="data",
                            params=cli.dvc_params("download", args.params), experiment=p.tracking.experiment) as run:
        with tempfile.TemporaryDirectory(prefix="recdistill-download-") as work:
            canonical, used = acquire(cfg.sources, Path(work), args.manual_dir, cfg.timeout_s,
                                      expect=cfg.expect)
            digests = write_canonical(canonical, args.out_dir)
        run.set_tags({f"source.{i}": f"{f.source.name}:{f.path.name}" for i, f in enumerate(used)})
        run.log_metrics({"data/ratings": len(canonical.ratings), "data/users": len(canonical.users),
                         "data/items": len(canonical.items),
                         "data/attribute_rows": len(canonical.attributes),
                         "data/items_with_attributes": canonical.attributes["item"].nunique()})
        run.log_dict(digests, "manifest.json")
        log.info("wrote %s from %s", args.out_dir, ", ".join(f.source.name for f in used))


if __name__ == "__main__":
    cli.run(main)
