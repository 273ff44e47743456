"""The report's figures as plain :class:`matplotlib.figure.Figure` objects (Agg canvas,
no display, no pyplot state): learning curves, quality against cost, coldstart bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from recdistill.arm import ROLES
from recdistill.report.specs import TRACK_NAMES, TrackSpec
from recdistill.report.summary import Evaluation, ModelSummary, Run, scenario_order

FIGURES = tuple(f"curves_{t}.png" for t in TRACK_NAMES) + ("quality_cost.png", "coldstart_scenarios.png")


def _placeholder(fig: Figure, text: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    return fig


def learning_curves(track: str, runs: Sequence[Run], spec: TrackSpec) -> Figure:
    """Train loss and the validation metric per epoch, one colour per model, one line per seed."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    with_history = [r for r in runs if r.history]
    if not with_history:
        return _placeholder(fig, f"{track}: no training histories yet")
    axes = fig.subplots(1, 2)
    models = sorted({r.result.model for r in with_history})
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for ax, key in zip(axes, ("train/loss", spec.curve)):
        labelled: set[str] = set()
        for r in sorted(with_history, key=lambda r: (r.result.model, r.result.seed)):
            points = [(row["epoch"], row[key]) for row in r.history or [] if key in row]
            if points:
                x, y = zip(*points)
                model = r.result.model
                ax.plot(x, y, color=colors[model], alpha=0.8, lw=1.2, marker=".",
                        label=None if model in labelled else model)
                labelled.add(model)
    for ax, key in zip(axes, ("train/loss", spec.curve)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=key, title=f"{track}: {key}")
        low, high = ax.get_ylim()
        if key == "train/loss" and low > 0 and high / low > 100:  # e.g. a distillation phase
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return fig


def _params(m: ModelSummary) -> float:
    return m.params


def _latency_ms(m: ModelSummary) -> float:
    return m.latency.median_ms if m.latency else 0.0


def quality_vs_cost(ev: Evaluation, specs: Mapping[str, TrackSpec]) -> Figure:
    """Main test metric (mean ± std) against parameters (top row) and latency (bottom row),
    one column per track with results."""
    shown = {t: spec for t, spec in specs.items() if t in ev.tracks}
    fig = Figure(figsize=(4.2 * max(len(shown), 1), 7.5), layout="constrained")
    if not shown:
        return _placeholder(fig, "no results yet")
    axes = fig.subplots(2, len(shown), squeeze=False)
    for j, (track, spec) in enumerate(shown.items()):
        models = [m for m in ev.tracks.get(track, []) if spec.main in m.metrics]
        for i, (label, x_of) in enumerate((("parameters", _params), ("latency ms", _latency_ms))):
            ax = axes[i][j]
            points = [(x, m) for m in models if (x := x_of(m))]
            if not points:
                ax.text(0.5, 0.5, f"{track}: no results", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            for x, m in points:
                mean, std = m.metrics[spec.main]
                ax.errorbar([x], [mean], yerr=[std], fmt="o", color=f"C{ROLES.index(m.role)}",
                            capsize=3)
                ax.annotate(m.model, (x, mean), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
            units = {m.latency_unit for _, m in points if m.latency_unit}
            unit = f" ({', '.join(sorted(units))})" if x_of is _latency_ms and units else ""
            ax.set(xscale="log", xlabel=label + unit, ylabel=spec.main, title=track)
            ax.xaxis.set_minor_formatter(NullFormatter())  # narrow ranges crowd minor labels
            ax.margins(x=0.2, y=0.1)  # room for the labels
            ax.grid(alpha=0.3)
    handles = [axes[0][0].plot([], [], "o", color=f"C{i}", label=r)[0] for i, r in enumerate(ROLES)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(ROLES), fontsize=8)
    return fig


def scenario_bars(models: Sequence[ModelSummary], metric: str) -> Figure:
    """Coldstart: one group of bars per scenario, one bar per model family, ± std."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    rows = [m for m in models if m.scenario and metric in m.metrics]
    if not rows:
        return _placeholder(fig, "coldstart: no results yet")
    scenarios = sorted({m.scenario for m in rows if m.scenario}, key=scenario_order)
    role = {m.name: m.role for m in rows}
    families = sorted(role, key=lambda f: (role[f] == "baseline", f))  # the models, then baselines
    width = 0.8 / len(families)
    ax = fig.subplots()
    for i, family in enumerate(families):
        xs, means, stds = [], [], []
        for s, scenario in enumerate(scenarios):
            found = [m for m in rows if m.scenario == scenario and m.name == family]
            if found:
                mean, std = found[0].metrics[metric]
                xs.append(s + (i - (len(families) - 1) / 2) * width)
                means.append(mean)
                stds.append(std)
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=family, color=f"C{i}")
        ax.bar_label(bars, fmt="%.3f", fontsize=8, label_type="center", color="white")
    low = min(m.metrics[metric][0] - m.metrics[metric][1] for m in rows)
    high = max(m.metrics[metric][0] + m.metrics[metric][1] for m in rows)
    pad = 0.1 * (high - low) + 0.01
    ax.set_ylim(max(0.0, low - 2 * pad), high + pad)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set(ylabel=f"{metric} (axis not from 0)", title=f"coldstart: {metric} per scenario")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def make_figures(ev: Evaluation, specs: Mapping[str, TrackSpec]) -> dict[str, Figure]:
    """Every figure in :data:`FIGURES` (placeholders for tracks without results)."""
    figures = {f"curves_{t}.png": learning_curves(t, [r for r in ev.runs if r.result.track == t],
                                                  spec) for t, spec in specs.items()}
    figures["quality_cost.png"] = quality_vs_cost(ev, specs)
    figures["coldstart_scenarios.png"] = scenario_bars(ev.tracks.get("coldstart", []), specs["coldstart"].main)
    return figures
