"""Pre-flight: every input check the run makes before computing anything, so bad input fails once, up front
(exit 2), instead of as a hundred failed cells: the dataset loads, every subset fits, open-set sources and
pretrained models resolve, the classifier can be built.
"""

from __future__ import annotations

from pathlib import Path

from study.data.datasets import Dataset, DatasetError, load_dataset
from study.data.sources import OpenSetError, map_classes
from study.grid import OtherDataset, dataset_label
from study.hub import offline
from study.runner.plan import Plan
from study.sampling.pretrained import fetch


class BadInput(Exception):
    """Raised before any computation: the message names the file or option and what was expected."""


def check_inputs(plan: Plan, ctx) -> int:
    """Load the dataset and check every subset fits, so bad input fails once, up front (exit 2), instead
    of as a hundred failed cells. Returns the number of classes."""
    from study.data.datasets import subset_indices
    from study.models.classifier import build_classifier

    try:
        ds = ctx.dataset()
        largest = max(c.base_per_class + c.extra_per_class for c in plan.cells)
        subset_indices(ds.train.labels, ds.num_classes, plan.grid.seeds[0], 0, largest, ds.key, ds.class_names)
        check_sources(plan.grid, ds, Path(ctx.store_root) / "dataset")  # open-set arms: mappings, offline models
        # The classifier once (arch, width, model_kwargs), so a typo fails here and not in every cell.
        build_classifier(plan.grid.classifier, ds.num_classes, ds.train.images.shape[1], ds.train.images.shape[-1])
    except ValueError as exc:  # DatasetError, GridError and the classifier's errors name the key
        raise BadInput(f"{plan.grid.name}: {exc}") from None
    return ds.num_classes


def check_sources(grid, ds: Dataset, cache_dir: str | Path | None = None) -> None:
    """Up-front checks of every open-set arm, before anything is computed: another dataset loads and its class
    mapping covers the study's classes; offline, a pretrained hub id (and its CLIP filter) is in the local cache
    (local paths are checked when the plan is made)."""
    for arm, gen in grid.generators.items():
        where = f"generators.{arm}"
        if isinstance(gen.train_on, OtherDataset):
            label = dataset_label(gen.train_on.dataset)
            try:
                other = load_dataset(gen.train_on.dataset, cache_dir=cache_dir)
                map_classes(other.class_names, ds.class_names, gen.train_on.classes, label)
            except OpenSetError as exc:
                raise OpenSetError(f"{where}.{exc}") from None
            except DatasetError as exc:
                raise OpenSetError(f"{where}.train_on.dataset: {exc}") from None
        if gen.pretrained is not None and offline():
            spec = gen.pretrained
            fetch(spec.model, spec.revision, f"{where}.pretrained.model", pipeline=spec.kind != "class-unet")
            if spec.filter is not None:
                fetch(spec.filter.model, spec.filter.revision, f"{where}.pretrained.filter.model")
