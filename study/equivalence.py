"""`python -m study.equivalence RESULTS_DIR [--write]`: the equivalence tables only. The analysis lives in
study.analysis.equivalence; this module keeps the documented entry point."""

import sys

from study.analysis.equivalence import main

if __name__ == "__main__":
    sys.exit(main())
