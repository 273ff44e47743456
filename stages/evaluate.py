"""Stage evaluate: the teacher / transferred / alone comparison of every track.

In: METRICS_DIR/<track>/*.json (each training stage's metrics, read through the arm schema:
a file that does not match it is one error line naming the file and the field),
METRICS_DIR/latency/<track>.json (the <track>-latency stages' side-by-side timings),
MODELS_DIR/<track>/*/ (predictions.parquet, history.json, model.pt),
PREPARED_DIR/{cf,seq}/test.parquet. Params: evaluate (ks, the selection metric of each track,
the sampled-ranking label, the recomputation tolerance, the bootstrap of the gains) and seeds.
A track without metrics yet is skipped with a warning; no metrics of any track (of the
params' seeds) is an error.
Out: SUMMARY_JSON (per track, per model: mean/std over seeds of each test metric, cost, how many
seeds stopped at their epoch cap or early; per comparison the gain in the main metric with its
paired-bootstrap interval),
<track>.json beside SUMMARY_JSON (the same, per track; {} if absent), REPORT_MD (one table per track),
PLOTS_DIR/{curves_<track>,quality_cost,coldstart_scenarios}.png, and one MLflow run that
logs the table and figures and links every model's training run (the store's run that
recorded the checkpoint's md5: recdistill.tracking.checkpoint_runs).
Fails if a reported test metric is not reproduced by the saved predictions.
"""

from __future__ import annotations

import logging
import os
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
    specs = report.track_specs(p.evaluate)
    ev = report.build(args.metrics_dir, args.models_dir, args.prepared_dir, specs=specs,  # inputs checked first
                      ks=p.evaluate.ks, tolerance=p.evaluate.tolerance, bootstrap=p.evaluate.bootstrap,
                      seeds=p.seeds,
                      find_runs=lambda md5s: tracking.checkpoint_runs(md5s, p.tracking.experiment))
    with tracking.stage_run("evaluate", "", track="all", role="summary",
                            params=cli.dvc_params("evaluate", args.params),
                            experiment=p.tracking.experiment) as run:
        summary = report.summary_json(ev, specs)
        write_json(args.summary_json, summary)
        for track in specs:  # every file, so the DVC outs exist while tracks land
            write_json(args.summary_json.parent / f"{track}.json", summary.get(track, {}))

        figure_links = {}
        for name, figure in report.make_figures(ev, specs).items():
            path = args.plots_dir / name
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=110)
            run.log_artifact(path, "figures")
            figure_links[name.removesuffix(".png").replace("_", " ")] = Path(
                os.path.relpath(path, args.report_md.parent)).as_posix()

        links = {f"{r.result.track}/{r.result.model}/s{r.result.seed}": r.link
                 for r in ev.runs if r.link}
        # the params behind the whole report: the ones read here and each training run's
        provenance = report.Provenance(commit=run.commit, params_hash=tracking.params_hash(
            {"evaluate": run.tags["params.hash"],
             "runs": {key: link.get("params.hash", "") for key, link in links.items()}}),
            data_manifest=run.tags["data.manifest"])
        write_text(args.report_md, report.render_markdown(
            ev, specs=specs, provenance=provenance, figures=figure_links, tolerance=p.evaluate.tolerance))
        run.log_artifact(args.report_md)
        run.log_artifact(args.summary_json)

        run.log_dict(links, "linked_runs.json")
        run.set_tags({"mlflow.note.content": report.links_markdown(ev), "tracks.missing":
                      ",".join(ev.missing) or "none", "params.report.hash": provenance.params_hash,
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
