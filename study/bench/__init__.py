"""Benchmarks: `python -m study.bench {generator,classifier,runner} [...]`.

Each benchmark measures its workload and, in the same run, the machine's fastest dense matmul, and reports
ratios (achieved FLOP/s over peak FLOP/s), so the figures mean the same on a noisy shared machine. Results
merge into `reports/bench.json` (one section per benchmark) and are rendered into `reports/bench.md`.
"""
