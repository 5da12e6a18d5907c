"""`python -m study.run GRID.yaml [options]`: run a grid. The command lives in study.runner.cli (its --help
lists the options and exit codes); this module keeps the documented entry point."""

import sys

from study.runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
