"""Generation time of the synthetic datasets at the paper's sizes (goal: under a second each).

Reported against a reference in the same process: drawing the same number of plain unit vectors that
the accepted samples need, without any rejection. The ratio shows what rejection sampling costs.

Usage: python benchmarks/bench_synthetic.py
"""

from __future__ import annotations

import time

import numpy as np

from mmtool.data.synthetic import GENERATORS, unit_vectors


def main() -> None:
    rng = np.random.default_rng(0)
    for name, (generate, n) in GENERATORS.items():
        start = time.perf_counter()
        generate(0, n)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        unit_vectors(rng, 2 * n, 50)
        reference = time.perf_counter() - start
        print(f"{name:<12} {seconds:6.3f} s  ratio to unconstrained draw {seconds / reference:7.1f}  goal < 1 s")


if __name__ == "__main__":
    main()
