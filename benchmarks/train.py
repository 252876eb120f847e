"""ABMIL training throughput and peak memory on 10,000 x 1024 bags; metric evaluation time.

Prints a table and writes benchmarks/results/train.json. Bags are random tensors held in
memory (this measures the model, not disk IO). Peak memory is the process's peak RSS
growth during each phase (``resource.getrusage``), measured in a fresh subprocess per
phase so phases do not hide each other's peaks.

Usage: .venv/bin/python benchmarks/train.py [--patients 16] [--patches 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "train.json"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase_train(patients: int, patches: int, dim: int, threads: int, steps: int) -> dict:
    import torch

    from casegraph.models.baselines import _BagNet
    from casegraph.models.losses import nll_survival_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bags = [torch.randn(patches, dim) for _ in range(patients)]
    labels = torch.randint(0, 4, (patients,))
    events = torch.ones(patients)
    net = _BagNet(dim, 256, 4, 0.25, "attention")
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    base = _rss_mib()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        for i in range(0, patients, 8):  # batches of 8 patients (one bag each)
            logits, _ = net(bags[i:i + 8])
            loss = nll_survival_loss(logits, labels[i:i + 8], events[i:i + 8])
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"phase": "abmil_train", "patients": patients, "patches": patches, "dim": dim,
            "threads": threads, "seconds_per_epoch": best, "patients_per_s": patients / best,
            "peak_rss_growth_mib": _rss_mib() - base,
            "bag_mib": patches * dim * 4 / 2**20}


def phase_infer(patches: int, dim: int, threads: int) -> dict:
    import torch

    from casegraph.models.encoders import GatedAttentionMIL

    torch.set_num_threads(threads)
    bag = torch.randn(patches, dim)
    net = GatedAttentionMIL(dim, 256, chunk_size=8192).eval()
    base = _rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        net(bag)
    return {"phase": "abmil_infer", "patches": patches, "dim": dim, "threads": threads,
            "seconds": time.perf_counter() - start, "peak_rss_growth_mib": _rss_mib() - base,
            "bag_mib": patches * dim * 4 / 2**20}


def phase_metrics(n: int) -> dict:
    import numpy as np

    from casegraph.models.base import Prediction
    from casegraph.models.evaluate import evaluate_prediction
    from casegraph.schema import SurvivalTarget

    rng = np.random.default_rng(0)

    def target(m: int) -> SurvivalTarget:
        return SurvivalTarget.from_arrays(rng.exponential(30, m), rng.random(m) < 0.4)

    train, test = target(4 * n), target(n)
    surv = np.sort(rng.random((n, 4)), axis=1)[:, ::-1].copy()
    pred = Prediction(patient_ids=[str(i) for i in range(n)], risk=rng.normal(size=n),
                      survival=surv, bin_edges=np.array([0.0, 10.0, 25.0, 50.0, np.inf]))
    evaluate_prediction(pred, train, test)  # warm-up (imports)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        evaluate_prediction(pred, train, test)
        runs.append(time.perf_counter() - start)
    return {"phase": "metrics", "patients": n, "seconds": min(runs),
            "metrics": ["harrell_c", "uno_c", "mean_auc", "ibs"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--patches", type=int, default=10_000)
    parser.add_argument("--infer-patches", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # child process: one phase, JSON on stdout
        if args.phase == "train":
            out = phase_train(args.patients, args.patches, args.dim, args.threads, args.steps)
        elif args.phase == "infer":
            out = phase_infer(args.infer_patches, args.dim, args.threads)
        else:
            out = phase_metrics(1000)
        print(json.dumps(out))
        return
    rows = []
    for phase in ("train", "infer", "metrics"):
        cmd = [sys.executable, __file__, "--phase", phase, *sys.argv[1:]]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    train, infer, metrics = rows
    print(f"{'measure':48s} value")
    label = f"ABMIL train, patients/s (bags {args.patches} x {args.dim})"
    print(f"{label:48s} {train['patients_per_s']:.2f}")
    print(f"{'ABMIL train, peak RSS growth (MiB)':48s} {train['peak_rss_growth_mib']:.0f}")
    label = f"ABMIL inference, one {args.infer_patches}-patch bag (s)"
    print(f"{label:48s} {infer['seconds']:.2f}")
    print(f"{'ABMIL inference, peak RSS growth (MiB)':48s} {infer['peak_rss_growth_mib']:.0f}")
    print(f"{'metrics of 1,000 patients (s)':48s} {metrics['seconds']:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "args": vars(args), "results": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
