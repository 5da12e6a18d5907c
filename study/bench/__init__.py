"""Benchmarks: `python -m study.bench {generator,classifier,runner,cost} [...]`.

Each benchmark measures its workload and, in the same run, the machine's fastest dense matmul, and reports
ratios (achieved FLOP/s over peak FLOP/s), so the figures mean the same on a noisy shared machine. Results
merge into `reports/bench.json` (one section per benchmark) and are rendered into `reports/bench.md`.
`python -m study.bench cost GRID` is the exception: it prints what one grid would cost on a GPU (FLOPs counted
here, scaled by the plan; study.bench.cost), for the grid's header.
"""
