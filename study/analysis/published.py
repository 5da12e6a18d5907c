"""The source paper's published closed-form constants, and the one rule that says which of them a study is
compared with (used by the equivalence analysis and, through its tables, by the report).

    match = match_published("npz", "cifar10")     # the grid's `analysis: {published: cifar10}`
    match.c2("closed"), match.generator("open")   # 2.53, "Stable Diffusion"
    match_published("bloodmnist")                 # a MedMNIST flavor or torchvision dataset matches by name
    match_published("npz")                        # None: an npz file or image folder is named by the grid

Which setting a study reproduces: the grid's `analysis.published` when given (the data of an `npz` file or an
`imagefolder` tree says nothing about where it came from), else the `dataset` column when it names a published
dataset itself (`cifar10`, the MedMNIST flavor `bloodmnist`), else none. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np

from study.grid.schema import PublishedSetting


@dataclass(frozen=True)
class Published:
    setting: str  # the grid's `analysis.published` value
    dataset: str  # as the paper names it
    arm_kind: str  # closed | open
    generator: str
    c2: float


# Wang et al. 2025 (arXiv 2508.09550), SCIENCE.md 1: the exchange rates c2, from a secondary source (approximate).
PUBLISHED = (
    Published("cifar10", "CIFAR-10", "closed", "EDM", 2.53),
    Published("cifar10", "CIFAR-10", "open", "Stable Diffusion", 2.93),
    Published("bloodmnist", "BloodMNIST", "closed", "EDM", 3.88),
    Published("imagenet100", "ImageNet-100", "closed", "DiT-XL/2", 37.84),
    Published("imagenet100", "ImageNet-100", "open", "Stable Diffusion", 1.68),
)
SETTINGS = {p.setting: p.dataset for p in PUBLISHED}  # setting -> the paper's dataset name
SOURCE = "Wang et al. 2025 (arXiv 2508.09550) via `SCIENCE.md`, from a secondary source, so approximate"
if set(SETTINGS) != set(get_args(PublishedSetting)):  # the grid schema names the settings this table holds
    raise RuntimeError(
        f"published settings {sorted(SETTINGS)} differ from the grid schema's {get_args(PublishedSetting)}"
    )


@dataclass(frozen=True)
class PublishedMatch:
    """The published setting a study is compared with, and how it was matched."""

    setting: str
    by: str  # e.g. "the grid's analysis.published", "the dataset column 'cifar10'"

    @property
    def dataset(self) -> str:
        return SETTINGS[self.setting]

    def _row(self, arm_kind: str) -> Published | None:
        return next((p for p in PUBLISHED if p.setting == self.setting and p.arm_kind == arm_kind), None)

    def c2(self, arm_kind: str) -> float:
        """The published c2 for this generator kind (closed | open), NaN where the paper reports none."""
        row = self._row(arm_kind)
        return row.c2 if row else np.nan

    def generator(self, arm_kind: str) -> str | None:
        row = self._row(arm_kind)
        return row.generator if row else None


def match_published(dataset: str, setting: str | None = None) -> PublishedMatch | None:
    """The published setting of a study on `dataset` (the cells table's dataset column) whose grid names
    `setting` (its `analysis.published`, or None); None when there is none. An unknown setting is a ValueError."""
    if setting is not None:
        if setting not in SETTINGS:
            raise ValueError(f"published setting {setting!r} is not one of {sorted(SETTINGS)}")
        return PublishedMatch(setting, "the grid's analysis.published")
    if str(dataset) in SETTINGS:
        return PublishedMatch(str(dataset), f"the dataset column {str(dataset)!r}")
    return None


def grid_setting(grid: dict | None) -> str | None:
    """`analysis.published` of a grid as plan.json stores it (None when absent: grids written before the key)."""
    return ((grid or {}).get("analysis") or {}).get("published")
