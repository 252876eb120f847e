"""Shared helpers for benchmark scripts: timing, a table printer, JSON output."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    return path


def cv_summary(fold_results: Any) -> dict[str, Any]:
    """C-index mean/std/per fold, mean IBS and fold count of one run's fold-results frame."""
    import numpy as np

    c = fold_results["c_index"].to_numpy(dtype=float)
    return {"c_index_mean": float(np.mean(c)), "c_index_std": float(np.std(c)),
            "c_index_folds": c.tolist(), "ibs_mean": float(fold_results["ibs"].mean()),
            "n_folds": len(c)}


def print_cv_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print_table(title, ["config", "C-index", "IBS", "folds"],
                [[r["name"], f"{r['c_index_mean']:.3f} ± {r['c_index_std']:.3f}",
                  f"{r['ibs_mean']:.3f}", r["n_folds"]] for r in rows])


def mean_sd(values: Any) -> str:
    """``mean ± sd`` of fold values, three decimals."""
    import numpy as np

    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def paired_delta(diff: Any) -> str:
    """``Δ mean (wins/folds)`` of paired fold differences (wins = folds with diff > 0)."""
    import numpy as np

    d = np.asarray(diff, dtype=float)
    return f"Δ {d.mean():+.3f} ({int((d > 0).sum())}/{len(d)})"
