"""How each stage of the plan is built: the glue between plan nodes and the generator, sampling and
classifier modules. Each `build_*` writes one artifact directory; `Store.ensure` wraps it with the lock,
the done marker and provenance.

    build_node(node, context)  # -> Outcome; never raises for a failure inside the stage
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from study.data.datasets import Dataset, Split, load_dataset, real_indices
from study.grid import Grid, MixSpec, dataset_label
from study.keys import derive_seed, key_of
from study.models.device import resolve_device
from study.runner.plan import Node
from study.store import (
    CLASSIFIER_WEIGHTS,
    CONFIG,
    DIAGNOSTICS,
    DONE,
    METRICS,
    TRAIN_STATS,
    Store,
    atomic_write_json,
    read_json,
)


class ParentFailed(RuntimeError):
    """A stage cannot run because an artifact it reads failed."""


@dataclass(frozen=True)
class Context:
    """What every build needs besides the node; picklable, so it travels to joblib/dask/ray workers."""

    grid: Grid
    store_root: str
    device: str = "auto"
    progress: bool = False
    force: bool = False

    @property
    def store(self) -> Store:
        return Store(self.store_root)

    def dataset(self) -> Dataset:
        return load_dataset(self.grid.dataset, cache_dir=Path(self.store_root) / "dataset")


@dataclass(frozen=True)
class Outcome:
    key: str
    stage: str
    status: str  # built | cached | failed
    seconds: float = 0.0
    error: str = ""


# --- the stages --------------------------------------------------------------------------------------


def real_subset(ds: Dataset, seed: int, per_class: int) -> Split:
    """The first `per_class` images of every class in the seed's fixed order (nested subsets)."""
    return ds.train.subset(real_indices(ds, seed=seed, per_class=per_class))


def train_and_score(
    ctx: Context, ds: Dataset, real: Split, out: Path, *, seed: int, save: bool, synthetic: Split | None = None,
    mix: MixSpec = "uniform",
) -> dict:  # fmt: skip
    """Train the grid's classifier on `real` (+ `synthetic`, batches mixed by `mix`), save it when `save` (its
    embedding space serves pair selection and the conditional-accuracy diagnostic), and return its test
    metrics with the training stats, as metrics.json holds them."""
    from study.models.classifier import save_classifier, train_classifier

    spec = ctx.grid.classifier
    model, stats = train_classifier(
        spec, real, ds.num_classes, seed=seed, flip=ds.flip, synthetic=synthetic, mix=mix, val=ds.val,
        device=ctx.device, progress=ctx.progress,
    )  # fmt: skip
    if save:
        save_classifier(model, spec, out, num_classes=ds.num_classes)
    metrics = evaluate_model(model, ds, ctx.device)
    return {**metrics, "train": stats, "num_classes": ds.num_classes}


def build_reference(node: Node, ctx: Context, out: Path) -> dict:
    ds = ctx.dataset()
    metrics = train_and_score(ctx, ds, ds.train, out, seed=derive_seed("reference", node.key), save=True)
    atomic_write_json(out / METRICS, metrics)
    return {"train": metrics["train"]}


def evaluate_model(model, ds: Dataset, device: str) -> dict:
    """Test-split metrics (study.models.classifier.evaluate) and, for a face dataset, verification on its other
    identities (study.models.embedding.verify: verif_*, tar_at_far_*, rank1, the ROC). Every cell uses the same
    pair folds and bootstrap draws (seed 0): cells differ only by their model."""
    from study.models.classifier import evaluate

    out = {} if ds.test is None else evaluate(model, ds.test, ds.num_classes, device=device)
    if ds.verification is not None:
        from study.models.embedding import verify

        out |= verify(model, ds.verification, device=device, seed=0)
        # Asserted when the dataset was loaded (study.data.faces); recorded with every result.
        out["identity_disjoint"] = not set(ds.class_names) & set(ds.verification.names)
    return out


def build_generator(node: Node, ctx: Context, out: Path) -> dict:
    ds = ctx.dataset()
    spec = ctx.grid.generators[node.arm]
    if spec.pretrained is not None:  # used as it is: resolved and recorded (a class-conditional UNet re-saved)
        from study.sampling.pretrained import prepare_pretrained

        return {"pretrained": prepare_pretrained(spec.pretrained, ds, out, where=f"generators.{node.arm}")}
    from study.data.sources import eval_duplicates, generator_data
    from study.models.generator import train_generator

    # Training splits only (generator_data checks): the base, the whole pool, or another dataset's mapped classes.
    data = generator_data(
        ds, spec.train_on, seed=node.seed, base_per_class=node.base_per_class,
        cache_dir=Path(ctx.store_root) / "dataset", name=dataset_label(ctx.grid.dataset),
    )  # fmt: skip
    stats = train_generator(
        spec.model,
        spec.train,
        data.images,
        data.labels,
        ds.num_classes,
        out,
        seed=derive_seed("generator", node.key),
        flip=ds.flip if spec.train.flip is None else spec.train.flip,
        device=ctx.device,
        progress=ctx.progress,
    )
    seen = {
        "train_images": len(data),
        "train_on": data.train_on,
        "train_data": data.describe(),
        "eval_duplicates": eval_duplicates(data.images, ds),  # byte-identical to a study test/val image
    }
    atomic_write_json(out / TRAIN_STATS, {**stats, **seen})
    return {"train": stats}


def sample_seed_root(node: Node) -> str:
    """Per-sample seeds hang off the generator and the sampling spec, not the volume: a smaller set is a
    prefix of a bigger one. A pretrained model serves every seed, so its sample sets add the seed."""
    config = node.art.config
    seed = {"seed": config["seed"]} if "seed" in config else {}
    return key_of({"generator": config["generator"], "sample": config["sample"], **seed})


def build_samples(node: Node, ctx: Context, out: Path) -> dict:
    from study.models.classifier import load_classifier, predict_proba
    from study.sampling.sampler import build_sample_set

    store, config = ctx.store, node.art.config
    gen_dir = _parent_dir(store, node, "generator")
    ref_dir = _parent_dir(store, node, "reference")
    ds_classes = read_json(ref_dir / METRICS)["num_classes"]
    reference = load_classifier(ref_dir, device=ctx.device)

    def score(images: torch.Tensor):
        return predict_proba(reference, images, ds_classes, device=ctx.device)

    arm = ctx.grid.generators[node.arm]
    volume, seed_root = config["volume_per_class"], sample_seed_root(node)
    fit = None
    if arm.pretrained is not None:
        from study.data.datasets import fit_images
        from study.sampling.pretrained import build_text2image_samples, check_guidance, pretrained_kind

        ds = ctx.dataset()
        where = f"generators.{node.arm}"
        if pretrained_kind(gen_dir) == "text2image":
            info = build_text2image_samples(
                gen_dir, arm.pretrained, arm.sample, ds.class_names, volume, seed_root, out,
                channels=ds.channels, resolution=ds.resolution, score=score, device=ctx.device,
                progress=ctx.progress, where=where,
            )  # fmt: skip
            return {"sampling": info}
        check_guidance(gen_dir, arm.sample, where)

        def fit(images: torch.Tensor) -> torch.Tensor:  # a UNet of another size or channel count
            return fit_images(images, ds.channels, ds.resolution)

    info = build_sample_set(
        gen_dir, arm.sample, volume, seed_root, out, score=score, device=ctx.device, progress=ctx.progress,
        space=pair_space(node, ctx) if "classifier" in config else None, fit=fit,
    )  # fmt: skip
    return {"sampling": info}


def pair_space(node: Node, ctx: Context):
    """The embedding space of the real-only classifier a sample set depends on: its penultimate features and
    the class centroids of the real images it was trained on (study.sampling.pairs)."""
    from study.models.classifier import features, load_classifier
    from study.sampling.pairs import class_space

    clf_dir = _parent_dir(ctx.store, node, "classifier")
    if not (clf_dir / CLASSIFIER_WEIGHTS).exists():
        raise ParentFailed(
            f"the real-only classifier {clf_dir.name} has no saved weights (computed by an older version); "
            "rerun with --force to recompute it"
        )
    clf = load_classifier(clf_dir, device=ctx.device)
    trained_on = read_json(clf_dir / CONFIG)
    ds = ctx.dataset()
    real = real_subset(ds, trained_on["seed"], trained_on["real_per_class"])
    return class_space(
        lambda images: features(clf, images, device=ctx.device), real.images, real.labels, ds.num_classes
    )


def build_classifier(node: Node, ctx: Context, out: Path) -> dict:
    from study.sampling.sample_set import load_sample_set

    ds = ctx.dataset()
    config = node.art.config
    real = real_subset(ds, node.seed, node.real_per_class)
    synthetic, mix = None, "uniform"
    if "samples" in config:
        samples_dir = _parent_dir(ctx.store, node, "samples")
        synthetic = load_sample_set(samples_dir, config["volume_per_class"], labels=config.get("labels", "new-class"))
        gen = ctx.grid.generators[node.arm]
        mix = gen.mix or ctx.grid.classifier.mix
    # A real-only classifier is saved: its embedding space serves pair selection (pair_space).
    metrics = train_and_score(
        ctx, ds, real, out, seed=derive_seed("classifier", node.key), save=synthetic is None, synthetic=synthetic,
        mix=mix,
    )  # fmt: skip
    n_syn = 0 if synthetic is None else len(synthetic)
    atomic_write_json(out / METRICS, {**metrics, "n_train_real": len(real), "n_train_syn": n_syn})
    return {"train": metrics["train"]}


def build_diagnostics(node: Node, ctx: Context, out: Path) -> dict:
    """Memorisation, fidelity, domain gap and CAS of a sample set at one base (study.sampling.diagnostics)."""
    from study.models.classifier import features, load_classifier
    from study.sampling.diagnostics import RealSets, sample_set_diagnostics
    from study.sampling.sample_set import load_sample_set

    config, grid = node.art.config, ctx.grid
    ds = ctx.dataset()
    samples_dir = _parent_dir(ctx.store, node, "samples")
    judge = load_classifier(_parent_dir(ctx.store, node, "reference"), device=ctx.device)
    samples = load_sample_set(samples_dir, config["volume_per_class"], labels="soft")
    cas_volume = min(node.base_per_class, config["volume_per_class"])  # CAS: as many images as the real base
    pool_trained = grid.generators[node.arm].train_on == "pool" and grid.generators[node.arm].pretrained is None
    result = sample_set_diagnostics(
        samples,
        RealSets.of(ds, node.seed, node.base_per_class),
        ds,
        lambda images: features(judge, images, device=ctx.device),
        grid.diagnostics,
        derive_seed("diagnostics", node.key),
        classifier=grid.classifier if config["cas"] is not None else None,
        cas_samples=load_sample_set(samples_dir, cas_volume, labels="soft"),
        generator_seen=ds.train if pool_trained else None,
        device=ctx.device,
        out_dir=out,
    )
    atomic_write_json(out / DIAGNOSTICS, result)
    return {"diagnostics": result["seconds"]}


BUILDERS = {
    "reference": build_reference,
    "generator": build_generator,
    "samples": build_samples,
    "classifier": build_classifier,
    "diagnostics": build_diagnostics,
}


def _parent_dir(store: Store, node: Node, stage: str) -> Path:
    """The directory of the node's parent in `stage` (parents are done before children run), its files checked
    against their checksums: a damaged parent is invalidated (the next run rebuilds it and this artifact) and
    this build fails, rather than read garbage."""
    key = node.art.config[stage]
    found = store.find(stage, key)
    if found is None or not (found / DONE).exists():
        raise ParentFailed(f"{stage} {key[:12]} needed by {node.art.slug} is not done")
    problem = store.verify(found)
    if problem is not None:
        store.invalidate(found, problem)
        raise ParentFailed(f"{stage} {found.name} is damaged ({problem}); run again to rebuild it")
    return found


# --- running one node ----------------------------------------------------------------------------------


def build_node(node: Node, ctx: Context, threads: int | None = None) -> Outcome:
    """Build one artifact unless it is done. A failure is recorded (error.txt, with the traceback) and
    returned, never raised, so one failed cell never stops the others."""
    if threads:
        torch.set_num_threads(threads)
    store = ctx.store
    if ctx.force:
        store.clear_done(node.art)
    elif store.is_done(node.art):
        return Outcome(node.key, node.stage, "cached")
    device = str(resolve_device(ctx.device))
    run_ctx = Context(ctx.grid, ctx.store_root, device, ctx.progress)
    try:
        built = store.ensure(node.art, lambda out: BUILDERS[node.stage](node, run_ctx, out), device=device)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed outcome with its traceback
        return Outcome(node.key, node.stage, "failed", error=_summary(exc))
    seconds = store.done_info(node.art)["seconds"] if built else 0.0
    return Outcome(node.key, node.stage, "built" if built else "cached", seconds)


def fail_node(node: Node, ctx: Context, reason: str, kind: str = "ParentFailed") -> Outcome:
    """Record that a node could not run (a parent failed, or the cluster lost its task); retried on the next
    run."""
    store = ctx.store
    store.path(node.art).mkdir(parents=True, exist_ok=True)
    store.mark_failed(node.art, f"{kind}: {reason}\n")
    return Outcome(node.key, node.stage, "failed", error=f"{kind}: {reason}")


def _summary(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:500]
