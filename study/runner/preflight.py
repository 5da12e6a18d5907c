"""Pre-flight: every input check the run makes before computing anything, so bad input fails once, up front
(exit 2), instead of as a hundred failed cells: the results directory can be written, the device exists, the
dataset loads, every subset fits, open-set sources and pretrained models resolve, the generators' and the
classifier's settings build a model. `--dry-run` runs the same checks with the same messages, so a grid that
passes a dry run is not rejected by the real one. Only input errors (`study.errors.StudyInputError`) become
`BadInput`; any other exception is a bug and propagates with its traceback.

Cost: the dataset is loaded through its decode cache (results/store/dataset), so a dry run decodes an image
tree once and the real run after it reads the cached .npz; one classifier and one model per generator arm are
built (no training); a probe file is created and deleted in the results directory.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from study.data.datasets import Dataset, DatasetError, load_dataset, real_indices
from study.data.sources import OpenSetError, check_no_verification_identities, map_classes
from study.errors import StudyInputError
from study.grid import OtherDataset, dataset_label
from study.hub import offline
from study.runner.plan import Plan
from study.sampling.pretrained import fetch


class BadInput(StudyInputError):
    """Raised before any computation: the message names the file or option and what was expected."""


def check_results_dir(root: str | Path, grid_name: str) -> None:
    """The results root's store/ and <grid>/ directories exist and can be written in, or can be created (their
    nearest existing ancestor is a writable directory). A read-only filesystem, a path under a regular file or
    a directory without write permission is bad input, found before any work starts. Creates nothing."""
    root = Path(root)
    for target in (root / "store", root / grid_name):
        existing = target
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise BadInput(f"--results {root}: {existing} is not a directory, so {target} cannot be created")
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".study-probe."):
                pass
        except OSError as exc:
            what = "is read-only" if exc.errno == errno.EROFS else f"cannot be written in ({exc.strerror})"
            raise BadInput(f"--results {root}: {existing} {what}; results go to {target}") from None


def check_inputs(plan: Plan, ctx) -> int:
    """Check everything the cells will read, so bad input fails once, up front (exit 2). Returns the number
    of classes."""
    from study.models.classifier import build_classifier
    from study.models.device import resolve_device
    from study.models.generator import check_model

    try:
        resolve_device(ctx.device)  # --device cuda on a machine without it: bad input, not failed cells
        ds = ctx.dataset()
        largest = max(c.base_per_class + c.extra_per_class for c in plan.cells)
        real_indices(ds, seed=plan.grid.seeds[0], per_class=largest)  # class sizes are the same for every seed
        check_sources(plan.grid, ds, Path(ctx.store_root) / "dataset")  # open-set arms: mappings, offline models
        # Each model once (preset and resolution; arch, width, model_kwargs), so a typo fails here and not in
        # every cell.
        for arm, gen in plan.grid.generators.items():
            if gen.pretrained is None:
                try:
                    check_model(gen.model, ds.resolution)
                except StudyInputError as exc:
                    raise BadInput(f"generators.{arm}.{exc}") from exc
        build_classifier(plan.grid.classifier, ds.num_classes, ds.channels, ds.resolution)
    except StudyInputError as exc:
        raise BadInput(f"{plan.grid.name}: {exc}") from exc
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
                table = map_classes(other.class_names, ds.class_names, gen.train_on.classes, label)
                check_no_verification_identities(ds, other.class_names, table, label)
            except OpenSetError as exc:
                raise OpenSetError(f"{where}.{exc}") from None
            except DatasetError as exc:
                raise OpenSetError(f"{where}.train_on.dataset: {exc}") from None
        if gen.pretrained is not None and offline():
            spec = gen.pretrained
            fetch(spec.model, spec.revision, f"{where}.pretrained.model", pipeline=spec.kind != "class-unet")
            if spec.filter is not None:
                fetch(spec.filter.model, spec.filter.revision, f"{where}.pretrained.filter.model")
