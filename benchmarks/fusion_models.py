"""MurreNet and CCL cost per patient (issue 4).

For bag sizes 1,000 / 10,000 / 50,000 patches (D = 1024, float32, in memory; disk I/O is
not included) and each model at its paper width (MurreNet d = 768, CCL d = 256, six gene
groups of 100 features): one training step (forward + backward + Adam step) and one
inference pass per patient, and the process's peak resident memory. CCL runs twice: with
the store's precomputed centres (k-means done at ingest) and computing them from the bag
(k-means in the step, as without precomputation). Each configuration runs in a fresh
subprocess with one torch thread so peaks are per configuration.

Run: ``python -m benchmarks.fusion_models [--sizes 1000 10000 50000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import print_table, write_json

CONFIGS = ("murrenet", "ccl-precomputed", "ccl-from-bag")
GROUPS = [100] * 6
DIM_IN = 1024


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(config: str, n: int, repeat: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from casegraph.ingest.summaries import summarize_features
    from casegraph.models.ccl.model import COMPONENTS, CCLNet
    from casegraph.models.losses import nll_survival_loss
    from casegraph.models.murrenet.model import MurreNetNet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bag = rng.standard_normal(size=(n, DIM_IN), dtype=np.float32)
    genomics = [torch.randn(1, g) for g in GROUPS]
    label, event = torch.tensor([1]), torch.tensor([1.0])
    net: torch.nn.Module
    if config == "murrenet":
        net = MurreNetNet(DIM_IN, GROUPS, dim=768, n_bins=4, use_mrd=True, fusion="dhof")
        bag_t = torch.from_numpy(bag)

        def forward(training: bool) -> torch.Tensor:
            return net(bag_t, genomics)[0]  # type: ignore[no-any-return]
    else:
        net = CCLNet(DIM_IN, GROUPS, k=6, dim=256, n_bins=4, encoders=COMPONENTS,
                     use_cca=True, use_mkd=True, tau=0.1, alignment_metric="euclidean",
                     n_risk_groups=4, bank_length=10)
        # precomputed: done at ingest, outside the measured peak
        stored = summarize_features(bag, 6, 0)[1] if config == "ccl-precomputed" else None

        def forward(training: bool) -> torch.Tensor:
            centres = stored if stored is not None else summarize_features(bag, 6, 0)[1]
            return net(centres, genomics, training)[0]  # type: ignore[no-any-return]

    optimiser = torch.optim.Adam(net.parameters(), lr=2e-4, weight_decay=1e-5)
    base = _peak_mib()

    def train_step() -> None:
        net.train()
        optimiser.zero_grad()
        nll_survival_loss(forward(True)[None], label, event).backward()
        optimiser.step()

    def infer() -> None:
        net.eval()
        with torch.no_grad():
            forward(False)

    out: dict[str, Any] = {"model": config, "patches": n}
    for name, fn in (("train_s", train_step), ("infer_s", infer)):
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    out["peak_rss_mib"] = round(_peak_mib(), 1)
    out["peak_over_inputs_mib"] = round(_peak_mib() - base, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.repeat)))
        return
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        for config in args.configs:
            repeat = 1 if n >= 50000 and config == "murrenet" else args.repeat
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.fusion_models", "--one", config, str(n),
                 "--repeat", str(repeat)], capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print_table(
        "MurreNet / CCL per patient (1 thread, D=1024)",
        ["model", "patches", "train s", "infer s", "peak RSS MiB", "peak - inputs MiB"],
        [[r["model"], r["patches"], f"{r['train_s']:.3f}", f"{r['infer_s']:.3f}",
          r["peak_rss_mib"], r["peak_over_inputs_mib"]] for r in rows],
    )
    path = write_json("fusion_models" + (f"_{args.tag}" if args.tag else ""), {"rows": rows, "threads": 1, "dim_in": DIM_IN,
                                         "gene_groups": GROUPS})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
