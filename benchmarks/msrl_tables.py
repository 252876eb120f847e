"""Markdown tables from ``msrl_cv.py`` JSON files: C-index mean ± sd per cohort, signal and
configuration, and paired fold differences against a reference configuration.

    .venv/bin/python -m benchmarks.msrl_tables benchmarks/results/msrl_grid_*.json \\
        --configs msrl,msrl_h,msrl_multi,abmil-mean,snn,late_fusion-mean --versus abmil-mean
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import mean_sd, paired_delta


def load(paths: list[Path]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(cohort, signal, config) -> {fold: C-index}."""
    out: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for path in paths:
        rows: list[dict[str, Any]] = json.loads(path.read_text())
        for r in rows:
            out[(r["cohort"], r["signal"], r["model"])][int(r["fold"])] = float(r["c_index"])
    return out


def cell(values: dict[int, float], reference: dict[int, float] | None) -> str:
    if not values:
        return "—"
    text = mean_sd(list(values.values()))
    if len(values) < 5:
        text += f" ({len(values)} folds)"
    if reference:
        shared = sorted(set(values) & set(reference))
        if shared:
            text += "; " + paired_delta([values[f] - reference[f] for f in shared])
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--configs", default="msrl,msrl_h,msrl_multi,abmil-mean,snn,late_fusion-mean")
    parser.add_argument("--versus", default="", help="configuration for paired differences")
    args = parser.parse_args()
    results = load(args.files)
    keys = sorted({(c, s) for c, s, _ in results}, key=lambda k: (k[0], -float(k[1])))
    configs = args.configs.split(",")
    print("| cohort | signal | " + " | ".join(configs) + " |")
    print("|---|---|" + "---|" * len(configs))
    for cohort, signal in keys:
        reference = results.get((cohort, signal, args.versus)) if args.versus else None
        cells = [cell(results.get((cohort, signal, c), {}),
                      reference if c != args.versus else None) for c in configs]
        print(f"| {cohort} | {signal} | " + " | ".join(cells) + " |")
    if args.versus:
        print_pooled(results, configs, args.versus)


def print_pooled(results: dict[tuple[str, str, str], dict[int, float]], configs: list[str],
                 versus: str) -> None:
    """Paired differences to ``versus`` pooled over every (cohort, fold), per signal:
    mean ± standard error, the paired sd, and the folds won."""
    print("\n| signal | " + " | ".join(f"{c} − {versus}" for c in configs if c != versus) + " |")
    print("|---|" + "---|" * (len(configs) - 1))
    for signal in sorted({s for _, s, _ in results}, key=lambda s: -float(s)):
        cells = []
        for config in (c for c in configs if c != versus):
            diffs = [values[f] - ref[f]
                     for (cohort, sig, name), values in results.items()
                     if sig == signal and name == config
                     and (ref := results.get((cohort, sig, versus)))
                     for f in values if f in ref]
            if not diffs:
                cells.append("—")
                continue
            d = np.array(diffs)
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            sd = d.std(ddof=1) if len(d) > 1 else float("nan")
            cells.append(f"{d.mean():+.3f} ± {se:.3f}, sd {sd:.3f} "
                         f"({int((d > 0).sum())}/{len(d)})")
        print(f"| {signal} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
