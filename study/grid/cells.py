"""Expansion of a grid into cells: one Cell per classifier to train.

    cells = expand(grid)

For each seed and base size: one real-only cell, one real-extra cell per extra size and one cell per generator
arm and synthetic volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from study.grid.schema import Grid


@dataclass(frozen=True)
class Cell:
    """One classifier to train: a seed, a base size and one arm (with its extra size or synthetic volume)."""

    seed: int
    base_per_class: int
    arm: str  # real-only | real-extra | a generator arm name
    arm_kind: Literal["real-only", "real-extra", "closed", "open"]
    extra_per_class: int = 0
    volume_per_class: int = 0

    @property
    def label(self) -> str:
        size = {"real-only": "", "real-extra": f"-extra{self.extra_per_class}"}.get(
            self.arm_kind, f"-vol{self.volume_per_class}"
        )
        return f"{self.arm}-base{self.base_per_class}{size}-s{self.seed}"


def expand(grid: Grid) -> list[Cell]:
    """For each seed and base size: one real-only cell, one real-extra cell per extra size, and one cell
    per generator arm and synthetic volume."""
    cells = []
    for seed in grid.seeds:
        for base in grid.real.base:
            cells.append(Cell(seed, base, "real-only", "real-only"))
            cells += [Cell(seed, base, "real-extra", "real-extra", extra_per_class=e) for e in grid.real.extra]
            for arm, gen in grid.generators.items():
                for volume in grid.synthetic.volumes_for(base):
                    cells.append(Cell(seed, base, arm, gen.kind, volume_per_class=volume))
    return cells
