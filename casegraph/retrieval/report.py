"""Human-readable output of a query: a terminal summary and a Kaplan-Meier PNG (drawn
with the shared survival module, :mod:`casegraph.models.neighbourhood`, and the figure
helpers of :mod:`casegraph.models.plots`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from casegraph.models.neighbourhood import (
    at_risk_counts,
    censor_marks,
    effective_counts,
    kaplan_meier,
    km_confidence_band,
    step_points,
)
from casegraph.models.plots import FloatArray, IntArray, KMCurve, table_times
from casegraph.retrieval.results import QueryResult
from casegraph.retrieval.track_record import MetricSummary, TrackRecord


def _metric(summary: MetricSummary | None) -> str:
    if summary is None or summary.mean is None:
        return "-"
    return f"{summary.mean:.3f} ± {summary.sd or 0.0:.3f} (n={summary.n})"


def track_record_lines(record: TrackRecord) -> list[str]:
    """The track record as terminal lines: one line when there is none."""
    if record.run_id is None:
        return [f"track record of {record.method}: {record.note}"]
    lines = [f"track record of {record.method} on {record.cohort} ({record.folds}, run "
             f"{record.run_id}, {record.linked}): Harrell C {_metric(record.harrell_c)}, "
             f"Uno C {_metric(record.uno_c)}, IBS {_metric(record.ibs)}"]
    base = record.baseline
    if base is not None:
        lines.append(f"baseline {base.method}: " + (
            f"Harrell C {_metric(base.harrell_c)}, Uno C {_metric(base.uno_c)}, IBS "
            f"{_metric(base.ibs)} (run {base.run_id})" if base.run_id else str(base.note)))
    return lines


def print_result(result: QueryResult) -> None:
    """A short terminal report (rich tables)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    chosen = result.method_choice is not None and \
        result.fallback_reason == result.method_choice.reason
    method = result.method + (" (chosen by auto: see the method choice below)" if chosen else
                              f" (fallback: {result.fallback_reason})" if result.fallback_reason
                              else f" (model {result.model_version})")
    console.print(f"[bold]WSI-only query[/bold]: {result.n_patches} patches; method {method}")
    console.print(f"index {result.index.version_id}/{result.index.kind} ({result.index.type}, "
                  f"{result.index.n} patients); {result.n_candidates} candidates")
    curve = ", ".join(f"S({t:.1f})={s:.2f}" for t, s in zip(result.survival.times,
                                                            result.survival.survival,
                                                            strict=True))
    console.print(f"risk {result.risk:.3f}; predicted survival {curve}")
    table = Table(title=f"{len(result.neighbours)} most similar patients")
    # ids are what a reader copies: they never truncate, at any width or in a pipe
    table.add_column("#", no_wrap=True)
    table.add_column("patient", no_wrap=True, overflow="fold",
                     min_width=max([len("patient"), *(len(n.patient_id) for n in result.neighbours)]))
    for column in ("cohort", "similarity", "weight", "time", "event", "oncotree", "genomics",
                   "histology"):
        table.add_column(column)
    for n in result.neighbours:
        table.add_row(str(n.rank), n.patient_id, n.cohort, f"{n.similarity:.3f}",
                      f"{n.weight:.3f}", f"{n.time:.1f}", "death" if n.event else "censored",
                      n.oncotree_code or "", n.genomics, n.histology)
    console.print(table)
    km = result.neighbourhood_km
    median = "not reached" if km.median_survival is None else f"{km.median_survival:.1f}"
    console.print(f"neighbourhood Kaplan-Meier: median survival {median}; "
                  f"{sum(km.events)} deaths among {len(result.neighbours)}")
    console.print("inputs: " + "; ".join(f"{i.name} ({i.modality}): {i.status}"
                                         for i in result.inputs))
    if result.method_choice is not None:
        console.print(f"method choice: {result.method_choice.reason}", markup=False)
    if result.track_record is not None:
        for line in track_record_lines(result.track_record):
            console.print(line, markup=False)
        if result.track_record.calibration is not None:
            console.print(f"calibration: {result.track_record.calibration.note}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}")


@dataclass
class QueryKMFigure:
    """What :func:`plot_km` draws, in numbers (from :mod:`casegraph.models.neighbourhood`):
    the neighbours' weighted Kaplan-Meier steps at distinct times (m,) with its log-log 95%
    band (m,), censor ticks (c,), the predicted curve as steps (b + 1,), and the numbers at
    risk (k,) at ``table_times`` (k,)."""

    curve: KMCurve
    effective_n: float
    predicted_x: FloatArray
    predicted_y: FloatArray
    table_times: FloatArray
    at_risk: IntArray


def km_plot_data(result: QueryResult) -> QueryKMFigure:
    """The numbers of the query's KM figure. The neighbours' curve is weighted by their
    answer weights; its band uses the weights rescaled to their effective sample size
    (Kish), so k neighbours with uneven weights get the band of fewer patients."""
    t = np.asarray([n.time for n in result.neighbours], dtype=np.float64)
    e = np.asarray([n.event for n in result.neighbours], dtype=bool)
    w = effective_counts([n.weight for n in result.neighbours])
    if not t.size or w.sum() <= 0:  # no neighbours or no weight: count each once
        w = np.ones_like(t)
    times, surv, at_risk, deaths = kaplan_meier(t, e, w)
    lower, upper = km_confidence_band(surv, at_risk, deaths)
    ticks, tick_surv = censor_marks(t, e, w)
    curve = KMCurve(label=f"weighted KM of {t.size} neighbours", n=int(t.size), times=times,
                    survival=surv, lower=lower, upper=upper, censor_times=ticks,
                    censor_survival=tick_surv)
    bins = np.asarray(result.survival.times, dtype=np.float64)
    finite = np.concatenate([bins[np.isfinite(bins)], t])
    bins = np.where(np.isfinite(bins), bins, finite.max() if finite.size else 1.0)
    px, py = step_points(bins, result.survival.survival)
    columns = table_times(float(max(px.max(), t.max() if t.size else 0.0)))  # the x axis
    return QueryKMFigure(curve=curve, effective_n=float(w.sum()), predicted_x=px,
                         predicted_y=py, table_times=columns,
                         at_risk=at_risk_counts(t, columns))


def plot_km(result: QueryResult, path: str | Path) -> Path:
    """Save the query's KM figure (PNG): the neighbours' weighted KM steps with their log-log
    95% band and censor ticks, the predicted survival as steps, numbers at risk below."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    data = km_plot_data(result)
    fig, (ax, table) = plt.subplots(2, 1, figsize=(5.5, 4.6), dpi=100, sharex=True,
                                    gridspec_kw={"height_ratios": [4, 1]})
    c = data.curve
    x, y = step_points(c.times, c.survival)
    _, lo = step_points(c.times, c.lower)
    _, hi = step_points(c.times, c.upper)
    ax.plot(x, y, drawstyle="steps-post", color="tab:blue",
            label=f"{c.label} (effective n={data.effective_n:.1f})")
    ax.fill_between(x, lo, hi, step="post", color="tab:blue", alpha=0.15, linewidth=0,
                    label="95% log-log band")
    ax.plot(c.censor_times, c.censor_survival, "|", color="tab:blue", markersize=8)
    ax.plot(data.predicted_x, data.predicted_y, drawstyle="steps-post", color="tab:red",
            linestyle="--", label="predicted S(t)")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    for col, count in zip(data.table_times, data.at_risk, strict=True):
        table.text(col, 0, str(int(count)), ha="center", va="center", fontsize=7)
    table.set_ylim(0.5, -0.5)
    table.set_yticks([0], ["neighbours"], fontsize=7)
    table.set_xticks(data.table_times)
    table.set_xlabel("months")
    table.set_title("numbers at risk", fontsize=7, loc="left")
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target)
    plt.close(fig)
    return target
