"""Human-readable output of a query: a terminal summary and a Kaplan-Meier PNG."""

from __future__ import annotations

from pathlib import Path

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


def plot_km(result: QueryResult, path: str | Path) -> Path:
    """Draw the neighbourhood's Kaplan-Meier step curve and the predicted survival."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    km = result.neighbourhood_km
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.step([0.0, *km.times], [1.0, *km.survival], where="post",
            label=f"KM of {len(result.neighbours)} neighbours")
    ax.plot(result.survival.times, result.survival.survival, "o--", label="predicted S(t)")
    ax.set_xlabel("months")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
