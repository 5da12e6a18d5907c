"""`python -m study.bench {generator,classifier,runner} [options]`: see each benchmark's --help."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "generator": "study.bench.generator",
    "classifier": "study.bench.classifier",
    "runner": "study.bench.runner",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m study.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(BENCHMARKS[argv[0]])
    except ModuleNotFoundError:
        print(f"error: the {argv[0]} benchmark is not in this version", file=sys.stderr)
        return 2
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
