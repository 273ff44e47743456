"""``reports/summary.md``: the per-track comparison tables, provenance and run links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recdistill.latency import ModelLatency
from recdistill.report.specs import TrackSpec, higher_is_better
from recdistill.report.summary import Evaluation, GainInterval, ModelSummary, Run, gains

@dataclass(frozen=True)
class Provenance:
    commit: str
    params_hash: str  # of the evaluate params and every linked training run's params hash
    data_manifest: str



def _teacher(models: Sequence[ModelSummary], m: ModelSummary) -> ModelSummary | None:
    teachers = [t for t in models if t.role == "teacher" and t.scenario == m.scenario]
    return teachers[0] if len(teachers) == 1 else None


def _fmt_metric(mean_std: tuple[float, float] | None, n: int) -> str:
    if mean_std is None:
        return "—"
    return f"{mean_std[0]:.4f}" + (f" ± {mean_std[1]:.4f}" if n > 1 else "")


def _fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "—"
    return f"{value / base:.2f}×" if value / base >= 0.01 else "<0.01×"


def _fmt_stopped(m: ModelSummary) -> str:
    """``early``, ``cap 1/3`` (seeds that stopped at the epoch cap: not converged) or ``—``."""
    if all(why == "not_trained" for why in m.stopped):
        return "—"
    at_cap = len(m.at_cap())
    return f"cap {at_cap}/{len(m.seeds)}" if at_cap else "early"


def _fmt_latency_ratio(latency: ModelLatency | None) -> str:
    """The median per-round ratio to the teacher and the quartiles of the rounds."""
    if latency is None:
        return "—"
    return f"{latency.ratio:.2f}× ({latency.ratio_q1:.2f}–{latency.ratio_q3:.2f})"


def _fmt_ms(ms: float) -> str:
    return f"{ms:.2f}" if ms >= 0.1 else f"{ms:.2g}"


def _fmt_gain(g: float | None) -> str:
    return "—" if g is None else f"{g:+.2%}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _interval_lines(intervals: Sequence[GainInterval], spec: TrackSpec) -> list[str]:
    """The bootstrapped gains in the main metric: one row per comparison, or its note."""
    if not intervals:
        return []
    units = "test users" if spec.predictions == "topk" else "test rows"
    cis = [g.ci for g in intervals if g.ci is not None]
    level = f"{cis[0].level * 100:g}% " if cis else ""
    lines = ["", f"Gain in `{spec.main}` (absolute, positive = better; the mean over seeds) with its {level}"
             f"paired-bootstrap interval over the {units}"
             + (f": {cis[0].resamples:,} resamples, each the same for both models and every seed." if cis else "."),
             "", _row(["comparison", "gain", f"{level}CI", "CI excludes 0", "per seed"]), _row(["---"] * 5)]
    for g in intervals:
        ci = g.ci
        lines.append(_row([f"{g.model} vs {g.base}", "—", "—", "—", g.note] if ci is None else [
            f"{g.model} vs {g.base}", f"{ci.mean:+.4f}", f"[{ci.low:+.4f}, {ci.high:+.4f}]",
            "yes" if ci.excludes_zero else "no", ", ".join(f"s{s} {d:+.4f}" for s, d in ci.per_seed.items())]))
    return lines


def _track_markdown(track: str, models: Sequence[ModelSummary], runs: Sequence[Run],
                    intervals: Sequence[GainInterval], spec: TrackSpec, tolerance: float) -> list[str]:
    columns = [c for c in spec.columns if any(c in m.metrics for m in models)]
    scenarios = any(m.scenario for m in models)
    units = {m.latency_unit for m in models if m.latency_unit}
    unit = f" ({units.pop()})" if len(units) == 1 else ""
    head = (["scenario"] if scenarios else []) + ["model", "role", "seeds", "stopped", *columns, "params",
                                                   "params ×teacher", "MACs/example",
                                                   f"latency ms{unit}", "latency ×teacher (IQR)"]
    direction = "higher" if higher_is_better(spec.main) else "lower"
    lines = [f"## {track}", "", f"Main metric `{spec.main}` ({direction} is better).", "",
             _row(head), _row(["---"] * len(head))]
    all_gains = gains(models, spec)

    def gain_rows(scenario: str | None) -> list[str]:
        return [_row(([scenario or ""] if scenarios else [])
                     + [f"gain: {g.model} vs {g.base}", "", "", "",
                        *(_fmt_gain(g.values.get(c)) for c in columns), "", "", "", "", ""])
                for g in all_gains if g.scenario == scenario]

    previous = models[0].scenario if models else None
    for m in models:
        if m.scenario != previous:  # the gains of the scenario group that just ended
            lines += gain_rows(previous)
            previous = m.scenario
        t = _teacher(models, m)
        cells = [m.model, m.role, str(len(m.seeds)), _fmt_stopped(m),
                 *(_fmt_metric(m.metrics.get(c), len(m.seeds)) for c in columns),
                 f"{m.params:,}", _fmt_ratio(m.params, t.params if t else None),
                 f"{m.macs_per_example:,}" + ("†" if m.macs_method == "formula" else ""),
                 _fmt_ms(m.latency.median_ms) if m.latency else "—", _fmt_latency_ratio(m.latency)]
        lines.append(_row(([m.scenario or ""] if scenarios else []) + cells))
    lines += gain_rows(previous)
    lines += _interval_lines(intervals, spec)
    at_cap = [f"{m.model}-s{seed}" for m in models for seed in m.at_cap()]
    if at_cap:
        lines += ["", f"Not converged (stopped at the epoch cap, not by early stopping): {', '.join(at_cap)}."]
    if any(m.macs_method == "formula" for m in models):
        lines += ["", "† MACs from a documented formula: the FLOP counter cannot see the work "
                  "(sparse products, lookups)."]
    ok = [r for r in runs if r.checked]
    checked = sorted({k for r in ok for k in r.checked})
    lines += ["", f"Recomputed from the saved test predictions (within {tolerance:g}): "
              f"{len(ok)} of {len(runs)} runs" + (f" ({', '.join(checked)})." if checked else ".")]
    unchecked = sorted(f"{r.result.model}-s{r.result.seed}" for r in runs if not r.checked)
    if unchecked:
        lines.append(f"Not recomputed (no predictions): {', '.join(unchecked)}.")
    return lines + [""]


def render_markdown(ev: Evaluation, *, specs: Mapping[str, TrackSpec], provenance: Provenance,
                    figures: Mapping[str, str], tolerance: float) -> str:
    """``reports/summary.md``: provenance, one table per track, links to the figures.

    Args:
        figures: link text -> path relative to the report (``"../plots/quality_cost.png"``).
    """
    trained = sorted({r.link["git.commit"] for r in ev.runs if r.link and "git.commit" in r.link})
    lines = ["# recdistill: what the transfer bought, and at what cost", "",
             f"- commit: `{provenance.commit}`",
             f"- params hash (evaluate and the training runs): `{provenance.params_hash}`",
             f"- data manifest: `{provenance.data_manifest}`",
             f"- models trained at: {', '.join(f'`{c}`' for c in trained) or '—'}", "",
             ("Test metrics are the mean ± sample std over seeds. A gain row is the relative "
              "improvement of the first model over the second (positive = better). "
              "×teacher is a cost as a fraction of the teacher's. Latency: every model of a "
              "track timed side by side in one process (first seed's checkpoints; the median "
              "over rounds, the ratio the median of per-round ratios with their interquartile "
              "range); params and MACs are counted. stopped: early (every seed "
              "stopped early), cap n/N (n seeds stopped at their epoch cap: not converged), "
              "— (not trained by gradient steps). Under each table, the absolute gain in the "
              "track's main metric with a paired-bootstrap interval over the test users or rows: "
              "the trained models held fixed, it covers test-set sampling, not the variance between "
              "training seeds, which the per-seed differences show."), ""]
    for track, spec in specs.items():
        if track in ev.tracks:
            runs = [r for r in ev.runs if r.result.track == track]
            lines += _track_markdown(track, ev.tracks[track], runs, ev.intervals.get(track, ()), spec, tolerance)
        else:
            lines += [f"## {track}", "", "No results yet.", ""]
    lines += ["## Figures", ""] + [f"- [{text}]({link})" for text, link in figures.items()]
    return "\n".join(lines) + "\n"


def links_markdown(ev: Evaluation, limit: int = 8000) -> str:
    """The summary run's MLflow description: per track, a table of links (model x seed) to
    the runs that trained each checkpoint (found by its md5 in the store). Cut to ``limit``
    characters (MLflow's tag limit); linked_runs.json holds them all."""
    lines = ["Training runs of each checkpoint (the latest finished run that recorded its md5).", ""]
    for track, models in ev.tracks.items():
        runs = [r for r in ev.runs if r.result.track == track and r.link]
        seeds = sorted({r.result.seed for r in runs})
        if not runs:
            continue
        lines += [f"**{track}**", "", _row(["model", *(f"seed {s}" for s in seeds)]),
                  _row(["---"] * (len(seeds) + 1))]
        for m in models:
            by_seed = {r.result.seed: r.link for r in runs if r.result.model == m.model}
            lines.append(_row([m.model, *(
                f"[{link['run_id'][:8]}](#/experiments/{link.get('experiment_id', '0')}"
                f"/runs/{link['run_id']})" if (link := by_seed.get(s)) else "—" for s in seeds)]))
        lines.append("")
    text = "\n".join(lines)
    tail = "\n\n(cut: see the artifact linked_runs.json)"
    return text if len(text) <= limit else text[:limit - len(tail)] + tail
