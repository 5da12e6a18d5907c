"""Grid files (DESIGN 3.2): the strict schema, YAML loading with `--smoke`, and expansion into cells.
Never imports torch: the report and `--dry-run` load grids without it.

    grid = load_grid("grids/quickstart.yaml", smoke=False)
    cells = expand(grid)          # one Cell per classifier to train
"""

from study.grid import schema
from study.grid.cells import Cell, expand
from study.grid.load import deep_merge, expand_vars, load_grid, validate_grid
from study.grid.schema import *  # noqa: F403 - every public name of the schema (its __all__) is the package's

__all__ = [*schema.__all__, "Cell", "deep_merge", "expand", "expand_vars", "load_grid", "validate_grid"]
