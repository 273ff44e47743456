"""Stage evaluate: the teacher / transferred / alone comparison of every track.

In: METRICS_DIR/<track>/*.json (each training stage's metrics), MODELS_DIR/<track>/*/
(predictions.parquet, history.json, run.json), PREPARED_DIR/{cf,seq}/test.parquet.
A track without metrics yet is skipped with a warning; no metrics of any track (of the
params' seeds) is an error.
Out: SUMMARY_JSON (per track, per model: mean/std over seeds of each test metric, cost),
<track>.json beside SUMMARY_JSON (the same, per track; {} if absent), REPORT_MD (one table per track),
PLOTS_DIR/{curves_<track>,quality_cost,coldstart_scenarios}.png, and one MLflow run that
logs the table and figures and links every model's training run (by the id in its run.json).
Fails if a reported test metric is not reproduced by the saved predictions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed

from recdistill import cli, report, tracking  # noqa: E402
from recdistill.io import atomic_path, write_json, write_text  # noqa: E402

log = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("metrics_dir", type=Path, help="metrics/ (reads <track>/*.json)")
    parser.add_argument("models_dir", type=Path, help="models/ (reads <track>/<model>-s<seed>/)")
    parser.add_argument("prepared_dir", type=Path, help="data/prepared (cf and seq test splits)")
    parser.add_argument("summary_json", type=Path, help="out: metrics/summary.json")
    parser.add_argument("report_md", type=Path, help="out: reports/summary.md")
    parser.add_argument("plots_dir", type=Path, help="out: directory of the PNG figures")
    args, p = cli.parse(parser, argv)
    identity = {f.name: getattr(p, f.name) for f in fields(p) if f.name not in ("runtime", "tracking")}
    with tracking.stage_run("evaluate", "", track="all", role="summary",
                            params={"evaluate": p.evaluate, "seeds": list(p.seeds)},
                            experiment=p.tracking.experiment) as run:
        ev = report.build(args.metrics_dir, args.models_dir, args.prepared_dir,
                          ks=p.evaluate.ks, tolerance=p.evaluate.tolerance, seeds=p.seeds)
        summary = report.summary_json(ev)
        write_json(args.summary_json, summary)
        for track in report.TRACKS:  # every file, so the DVC outs exist while tracks land
            write_json(args.summary_json.parent / f"{track}.json", summary.get(track, {}))

        figure_links = {}
        for name, figure in report.make_figures(ev).items():
            path = args.plots_dir / name
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=110)
            run.log_artifact(path, "figures")
            figure_links[name.removesuffix(".png").replace("_", " ")] = Path(
                os.path.relpath(path, args.report_md.parent)).as_posix()

        provenance = report.Provenance(commit=run.tags["git.commit"],
                                       params_hash=tracking.params_hash(identity),
                                       data_manifest=run.tags["data.manifest"])
        write_text(args.report_md, report.render_markdown(
            ev, provenance=provenance, figures=figure_links, tolerance=p.evaluate.tolerance))
        run.log_artifact(args.report_md)
        run.log_artifact(args.summary_json)

        links = {f"{r.result.track}/{r.result.model}/s{r.result.seed}": r.link
                 for r in ev.runs if r.link}
        elsewhere = sorted(k for k, link in links.items()
                           if link.get("tracking_uri", tracking.tracking_uri()) != tracking.tracking_uri())
        if elsewhere:
            log.warning("%d linked runs were logged to another MLflow store (e.g. %s)",
                        len(elsewhere), elsewhere[0])
        run.log_dict(links, "linked_runs.json")
        run.set_tags({"mlflow.note.content": report.links_markdown(ev), "tracks.missing":
                      ",".join(ev.missing) or "none", "params.all.hash": provenance.params_hash,
                      **{f"link.{key.replace('/', '.')}": link["run_id"]
                         for key, link in links.items()}})
        numbers = [(key, value) for key, value in tracking.flatten(summary).items()
                   if isinstance(value, int | float) and not isinstance(value, bool)]
        for start in range(0, len(numbers), 1000):  # mlflow's batch limit
            run.log_metrics(dict(numbers[start:start + 1000]))
        log.info("evaluate: %d runs of %d tracks (%s missing) -> %s, %s", len(ev.runs),
                 len(ev.tracks), ", ".join(ev.missing) or "none", args.summary_json, args.report_md)


if __name__ == "__main__":
    cli.run(main)
