"""The stage graph of a grid: which generators, sample sets and classifiers its cells need, by content key.

    plan = make_plan(grid)
    plan.nodes        # every artifact once, parents before children
    plan.cell_node    # Cell -> the classifier node that produces its row

Sharing falls out of the keys: arms that differ only in sampling share a generator (the generator key
holds only what training reads); one sample set of the largest volume per (generator, sampling spec)
serves every smaller volume; a real-extra cell (base b + extra e) trains on exactly the real images of
the real-only cell with base b + e (subsets are nested), so the two share one classifier. The judge (the
`reference` classifier on the whole pool) is one per seed; the diagnostics of a sample set are one node per
(sample set, base size): an open-set sample set serves every base, and memorisation is against the base.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from study.grid import (
    SCHEMA_VERSION,
    TEXT2IMAGE_OPTIONS,
    Cell,
    Grid,
    dataset_identity,
    dataset_label,
    is_face,
    mix_label,
)
from study.keys import canonical_json
from study.models.noise import alphas_cumprod, scheduler_config
from study.sampling import cost
from study.store import Artifact, Store

INCEPTION_ENV = "STUDY_INCEPTION_WEIGHTS"  # study.sampling.diagnostics.INCEPTION_ENV (that module needs torch)

# Settings that never change a stage's results, dropped from keys.
_UNKEYED_TRAIN = {"checkpoint_every"}
_UNKEYED_CLASSIFIER = {"eval_batch_size", "mix"}  # mix is keyed per cell, only where synthetic data exists


@dataclass(frozen=True)
class Node:
    art: Artifact
    parents: tuple[str, ...] = ()  # keys of the artifacts this one reads
    seed: int = 0
    base_per_class: int | None = None
    real_per_class: int | None = None
    arm: str | None = None  # an arm whose spec describes this node (the first that needs it)
    volume_per_class: int = 0

    @property
    def key(self) -> str:
        return self.art.key

    @property
    def stage(self) -> str:
        return self.art.stage


@dataclass
class Plan:
    grid: Grid
    cells: list[Cell]
    nodes: dict[str, Node] = field(default_factory=dict)  # key -> node, in dependency order
    cell_node: dict[Cell, str] = field(default_factory=dict)  # cell -> classifier key
    cell_diagnostics: dict[Cell, str] = field(default_factory=dict)  # synthetic cell -> its diagnostics key

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.key, node)
        return node.key

    def by_stage(self, stage: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.stage == stage]

    def cached(self, store: Store) -> set[str]:
        return {k for k, n in self.nodes.items() if store.is_done(n.art)}


def _dump(model, drop=()) -> dict:
    return {k: v for k, v in model.model_dump(mode="json").items() if k not in drop}


def _base(grid: Grid, stage: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "stage": stage, "dataset": dataset_identity(grid.dataset)}


def train_on_identity(train_on) -> str | dict:
    """base | pool, or another dataset's identity with its class mapping ([their, our] pairs keep 0 apart
    from "0": an index and a class name)."""
    if isinstance(train_on, str):
        return train_on
    pairs = sorted(([k, v] for k, v in train_on.classes.items()), key=lambda kv: canonical_json(kv))
    return {"dataset": dataset_identity(train_on.dataset), "classes": pairs}


def generator_node(grid: Grid, arm: str, seed: int, base: int) -> Node:
    gen = grid.generators[arm]
    if gen.pretrained is not None:
        return pretrained_node(grid, arm)
    config = {
        **_base(grid, "generator"),
        "seed": seed,
        "train_on": train_on_identity(gen.train_on),
        # an open-set generator (pool, another dataset) is shared by every base size
        "base_per_class": base if gen.train_on == "base" else None,
        "flip": grid.dataset.flip,
        "model": _dump(gen.model),
        "train": _dump(gen.train, _UNKEYED_TRAIN),
    }
    source = gen.train_on if isinstance(gen.train_on, str) else "on-" + dataset_label(gen.train_on.dataset)
    slug = f"gen-closed-base{base}-s{seed}" if gen.train_on == "base" else f"gen-{source}-s{seed}"
    return Node(Artifact("generator", slug, config), seed=seed, base_per_class=base, arm=arm)


def pretrained_node(grid: Grid, arm: str) -> Node:
    """A pretrained model, resolved (and, for a class-conditional UNet, re-saved with the study's class order)
    once per grid: shared by every seed and base size; its sample sets are drawn per seed."""
    from study.hub import slug_name, spec_identity

    spec = grid.generators[arm].pretrained
    config = {**_base(grid, "generator"), "pretrained": spec_identity(spec, f"generators.{arm}.pretrained")}
    return Node(Artifact("generator", f"gen-pretrained-{slug_name(spec.model)}", config), arm=arm)


def reference_node(grid: Grid, seed: int) -> Node:
    """The judge: a classifier on the whole real training pool, one per seed. It scores synthetic sets
    (conditional accuracy) and its penultimate features are the diagnostics' arm-independent space."""
    config = {**_base(grid, "reference"), "seed": seed, "classifier": _dump(grid.classifier, _UNKEYED_CLASSIFIER)}
    return Node(Artifact("reference", f"reference-s{seed}", config), seed=seed)


def diagnostics_node(grid: Grid, samples: Node, reference: Node, seed: int, base: int, volume: int) -> Node:
    """Memorisation, fidelity, domain gap and CAS of the first `volume` images per class of a sample set, against
    the base of `base` images per class and seed `seed` (study.sampling.diagnostics). A leaf: no cell waits for
    it, and its failure never fails a cell."""
    from study.hub import fingerprint_file

    spec = grid.diagnostics
    config = {
        **_base(grid, "diagnostics"),
        "samples": samples.key,
        "reference": reference.key,
        "seed": seed,
        "base_per_class": base,
        "volume_per_class": volume,
        "domain": None if spec.domain is None else _dump(spec.domain),
        "cas": _dump(grid.classifier, _UNKEYED_CLASSIFIER) if _has_cas(grid) else None,
    }
    weights = spec.inception or os.environ.get(INCEPTION_ENV)
    if weights and Path(weights).expanduser().is_file():  # the standard FID joins the key only when it can run
        config["inception"] = fingerprint_file(Path(weights).expanduser())
    slug = f"diag-{samples.art.slug.removeprefix('samples-')}-base{base}"
    return Node(Artifact("diagnostics", slug, config), parents=(samples.key, reference.key), seed=seed,
                base_per_class=base, arm=samples.arm, volume_per_class=volume)  # fmt: skip


def _has_cas(grid: Grid) -> bool:
    """CAS is test accuracy: a face dataset has no test split (it verifies on other identities), so no CAS."""
    return grid.diagnostics.cas and not is_face(grid.dataset)


def pair_classifier_node(grid: Grid, arm: str, seed: int, base: int) -> Node | None:
    """The real-only classifier of the seed and base whose embedding space a sample set reads: for far/near
    pairs and AugGen's alpha/beta search, and for every closed-set generator (the alignment diagnostic, at no
    cost: the classifier exists for the real-only cell and the sample set is per base anyway)."""
    gen = grid.generators[arm]
    if not (gen.sample.needs_classifier or gen.kind == "closed"):
        return None
    return classifier_node(grid, Cell(seed, base, "real-only", "real-only"), None)


def samples_node(
    grid: Grid, arm: str, gen: Node, volume: int, reference: Node, pair: Node | None = None, seed: int | None = None
) -> Node:
    spec = grid.generators[arm].sample
    config = {
        "schema_version": SCHEMA_VERSION,
        "stage": "samples",
        "generator": gen.key,
        "sample": spec.identity(),
        "volume_per_class": volume,
        "reference": reference.key,  # the conditional-accuracy diagnostic is part of the artifact
    }
    if pair is not None:
        config["classifier"] = pair.key  # the embedding space of pairs, the alpha/beta search and diagnostics
    pairs = f"-{spec.pair_rule}" if spec.mixing else ""
    slug = f"samples-{spec.strategy}{pairs}-{gen.art.slug.removeprefix('gen-')}-v{volume}"
    pretrained = grid.generators[arm].pretrained
    if pretrained is not None:  # one model serves every seed; each seed draws its own sample set
        from study.hub import sampling_identity

        config |= {"seed": seed, "pretrained": sampling_identity(pretrained, f"generators.{arm}.pretrained")}
        slug += f"-s{seed}"
    return Node(
        Artifact("samples", slug, config),
        parents=(gen.key, reference.key) + ((pair.key,) if pair is not None else ()),
        seed=gen.seed if pretrained is None else seed,
        base_per_class=gen.base_per_class,
        arm=arm,
        volume_per_class=volume,
    )


def classifier_node(grid: Grid, cell: Cell, samples: Node | None) -> Node:
    real = cell.base_per_class + cell.extra_per_class
    config = {
        **_base(grid, "classifier"),
        "seed": cell.seed,
        "real_per_class": real,
        "classifier": _dump(grid.classifier, _UNKEYED_CLASSIFIER),
    }
    parents: tuple[str, ...] = ()
    slug = f"real{real}-s{cell.seed}"
    if samples is not None:
        gen = grid.generators[cell.arm]
        mix = gen.mix or grid.classifier.mix
        config |= {
            "samples": samples.key,
            "volume_per_class": cell.volume_per_class,
            "mix": mix if isinstance(mix, str) else mix.model_dump(mode="json"),
        }
        if gen.sample.mixing:  # how mixed images are labelled is the classifier's business, not the samples'
            config["labels"] = gen.sample.label_policy
        parents = (samples.key,)
        slug = f"{cell.arm}-base{cell.base_per_class}-vol{cell.volume_per_class}-{mix_label(mix)}-s{cell.seed}"
    return Node(
        Artifact("classifier", slug, config),
        parents=parents,
        seed=cell.seed,
        base_per_class=cell.base_per_class,
        real_per_class=real,
        arm=cell.arm,
        volume_per_class=cell.volume_per_class,
    )


def make_plan(grid: Grid, cells: list[Cell]) -> Plan:
    """Every artifact the cells need, each once, parents added before children."""
    plan = Plan(grid, cells)
    synthetic = [c for c in cells if c.arm_kind in ("closed", "open")]
    if not synthetic:
        for cell in cells:
            plan.cell_node[cell] = plan.add(classifier_node(grid, cell, None))
        return plan
    references = {s: plan.nodes[plan.add(reference_node(grid, s))] for s in sorted({c.seed for c in synthetic})}
    # One sample set per (generator, sampling spec, pair classifier), as large as the largest volume any cell
    # asks of it; arms that differ only in how mixed images are labelled share it.
    gens = {c: plan.nodes[plan.add(generator_node(grid, c.arm, c.seed, c.base_per_class))] for c in synthetic}
    pair = {c: pair_classifier_node(grid, c.arm, c.seed, c.base_per_class) for c in synthetic}
    pair = {c: None if n is None else plan.nodes[plan.add(n)] for c, n in pair.items()}
    share = {
        c: (gens[c].key, canonical_json(grid.generators[c.arm].sample.identity()), pair[c] and pair[c].key, c.seed)
        for c in synthetic
    }
    largest = Counter()
    for c in synthetic:
        largest[share[c]] = max(largest[share[c]], c.volume_per_class)
    sets: dict[Cell, Node] = {}
    for cell in cells:
        samples = None
        if cell in gens:
            reference = references[cell.seed]
            node = samples_node(grid, cell.arm, gens[cell], largest[share[cell]], reference, pair[cell], cell.seed)
            samples = sets[cell] = plan.nodes[plan.add(node)]
        plan.cell_node[cell] = plan.add(classifier_node(grid, cell, samples))
    _add_diagnostics(plan, sets, references)
    return plan


def _add_diagnostics(plan: Plan, sets: dict[Cell, Node], references: dict[int, Node]) -> None:
    """One diagnostics node per (sample set, base size), on the largest prefix any cell at that base trains on."""
    volume: Counter = Counter()
    for cell, samples in sets.items():
        at = (samples.key, cell.base_per_class, cell.seed)
        volume[at] = max(volume[at], cell.volume_per_class)
    for cell, samples in sets.items():
        at = (samples.key, cell.base_per_class, cell.seed)
        node = diagnostics_node(plan.grid, samples, references[cell.seed], cell.seed, cell.base_per_class, volume[at])
        plan.cell_diagnostics[cell] = plan.add(node)


def describe(plan: Plan, store: Store) -> str:
    """The dry-run text: cells by arm; artifacts per stage, cached vs to compute; a work estimate."""
    done = plan.cached(store)
    lines = [f"grid {plan.grid.name}: {len(plan.cells)} cells"]
    arms = Counter(c.arm for c in plan.cells)
    for arm, n in arms.items():
        lines.append(f"  {arm:<24} {n:>5} cells")
    lines.append("artifacts:")
    for stage in ("reference", "generator", "samples", "classifier", "diagnostics"):
        nodes = plan.by_stage(stage)
        if nodes:
            cached = sum(n.key in done for n in nodes)
            lines.append(
                f"  {stage:<12} {len(nodes):>5} needed, {cached:>5} cached, {len(nodes) - cached:>5} to compute"
            )
    todo = [n for n in plan.nodes.values() if n.key not in done]
    lines.append("work to do: " + _work(plan, todo))
    return "\n".join(lines)


def sample_nfe_per_image(grid: Grid, node: Node) -> float:
    """Network evaluations per kept image of a sample-set node, counted by the functions the sampler records
    `nfe_per_image` with (study.sampling.cost): exact for a trained generator (its noise schedule is known in
    closed form; see cost for Heun's one caveat); for a pretrained model, whose schedule is known only once
    it is fetched, with `steps` trajectory steps (Heun: the upper bound 2 * steps - 1), counted as a
    class-conditional UNet unless the arm says text2image (kind, or prompt options)."""
    arm = grid.generators[node.arm]
    spec = arm.sample
    if arm.pretrained is None:
        config = scheduler_config(arm.model, arm.train)
        return cost.nfe_per_image(
            spec, cost.trajectory_length(spec.sampler, spec.steps, config, alphas_cumprod(config))
        )
    trajectory = cost.trajectory_length(spec.sampler, spec.steps, None, None)
    pretrained = arm.pretrained
    prompted = pretrained.kind == "text2image" or bool(pretrained.model_fields_set & set(TEXT2IMAGE_OPTIONS))
    if prompted:
        volume = node.volume_per_class
        drawn = cost.candidates_per_class(volume, pretrained.filter.drop if pretrained.filter else None)
        return cost.pipeline_nfe_per_image(spec, trajectory) * drawn / volume
    return cost.nfe_per_image(spec, trajectory)


def _work(plan: Plan, todo: list[Node]) -> str:
    grid = plan.grid
    gen_images = sum(
        grid.generators[n.arm].train.steps * grid.generators[n.arm].train.batch_size
        for n in todo
        if n.stage == "generator" and grid.generators[n.arm].pretrained is None
    )
    nfe = search = 0.0
    for n in todo:
        if n.stage == "samples":
            per_image = sample_nfe_per_image(grid, n)
            nfe += per_image * n.volume_per_class
            search += per_image * cost.search_images(grid.generators[n.arm].sample)  # AugGen: once per set
    clf = grid.classifier
    clf_steps = sum(1 for n in todo if n.stage in ("classifier", "reference"))
    budget = f"{clf.steps} steps x {clf.batch_size}" if clf.steps else f"{clf.epochs} epochs"
    searching = f" (+ {search:,.0f} for AugGen's alpha/beta search)" if search else ""
    diag = sum(1 for n in todo if n.stage == "diagnostics")
    spec = grid.diagnostics
    per_set = [f"{spec.domain.folds} domain classifiers of {spec.domain.steps} steps"] if spec.domain else []
    per_set += ["a CAS classifier"] if _has_cas(grid) else []
    diagnostics = f"; {diag} sample-set diagnostics" + (f" ({' + '.join(per_set)} each)" if per_set else "")
    return (
        f"generator training {gen_images:,} images; sampling {nfe:,.0f} network evaluations per class{searching}; "
        f"{clf_steps} classifiers of {budget}" + (diagnostics if diag else "")
    )
