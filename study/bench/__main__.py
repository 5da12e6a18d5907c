"""Benchmarks: `python -m study.bench {generator,classifier,runner,cost,faces} [options]` (or `study-bench ...`).

    python -m study.bench --help                 # the benchmarks
    python -m study.bench classifier --help      # one benchmark's options
    python -m study.bench generator --threads 1

The subcommand picks the benchmark; every option after it goes to that benchmark's own parser, so its
`--help` is the benchmark's. The benchmark modules import torch: only the chosen one is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with `main(argv) -> int`, one line for --help)
BENCHMARKS = {
    "generator": ("study.bench.generator", "generator throughput and sampler quality (~5-8 min)"),
    "classifier": ("study.bench.classifier", "classifier throughput (~3 min); --reference: accuracy"),
    "runner": ("study.bench.runner", "the quickstart cold and cached, compute reuse (~5 min)"),
    "cost": ("study.bench.cost", "a grid's GPU-hours from FLOPs counted per network (prints; ~1 min)"),
    "faces": ("study.bench.faces", "Eigenfaces on LFW View 2 beside the published 60.02 %%"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m study.bench",
        description="Benchmarks (times on 2 CPU cores). Results merge into reports/bench.json and reports/bench.md.",
        epilog="`python -m study.bench BENCHMARK --help` lists that benchmark's options.",
    )
    sub = p.add_subparsers(dest="benchmark", required=True)
    for name, (_, summary) in BENCHMARKS.items():
        # No help of its own: `--help` after the name is forwarded to the benchmark's parser.
        sub.add_parser(name, help=summary, description=summary, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
