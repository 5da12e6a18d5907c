"""Sampling strategies: AugGen condition mixing and ScoreMix score mixing, class-pair selection, label policies
for mixed samples, AugGen's alpha/beta search, linear CKA, and their place in the plan and the results table.
One tiny generator (~150 steps on 8x8 digits) and one tiny base classifier serve every test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pydantic import ValidationError

from study.grid import (
    Cell,
    ClassifierSpec,
    GridError,
    SampleSpec,
    expand,
    validate_grid,
)
from study.keys import derive_seed
from study.models.classifier import evaluate, features, train_classifier
from study.runner import cli as study_run
from study.runner.plan import classifier_node, describe, make_plan
from study.sampling.pairs import (
    class_space,
    cosine_distances,
    linear_cka,
    mixing_score,
    pair_counts,
    search_grid,
    select_pairs,
)
from study.sampling.sample_set import load_sample_set
from study.sampling.sampler import build_sample_set, nfe_per_image, sample
from study.store import SAMPLES_META, Store

STEPS = {"sampler": "dpmpp", "steps": 6}
PAIRS = torch.tensor([[3, 7], [1, 8], [0, 5], [9, 2], [4, 6], [7, 3]])
SEEDS = [100 + i for i in range(len(PAIRS))]


@pytest.fixture(scope="module")
def space(base):
    """The base classifier's embedding space (what far/near pairs and the alpha/beta search read)."""
    spec = ClassifierSpec(arch="study_cnn", width=8, steps=60, batch_size=64, optimizer="adamw", lr=0.003)
    model, _ = train_classifier(spec, base, 10, seed=0, flip=False, device="cpu")
    return class_space(lambda x: features(model, x, device="cpu"), base.images, base.labels, 10)


def spec(**kw) -> SampleSpec:
    return SampleSpec(**STEPS, **{"guidance": 2.0} | kw)


# --- bit for bit: the degenerate mixes are plain conditional sampling ------------------------------------


@pytest.mark.parametrize("which", ["gen", "edm_gen"])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_scoremix_with_lambda_one_is_conditional_sampling_bit_for_bit(request, which, guidance):
    gen = request.getfixturevalue(which)
    plain = spec(guidance=guidance)
    first = sample(gen, PAIRS[:, 0], SEEDS, plain)
    assert torch.equal(sample(gen, PAIRS, SEEDS, spec(guidance=guidance, strategy="scoremix", weight=1.0)), first)
    second = sample(gen, PAIRS[:, 1], SEEDS, plain)  # and lambda = 0 is class j
    assert torch.equal(sample(gen, PAIRS, SEEDS, spec(guidance=guidance, strategy="scoremix", weight=0.0)), second)


@pytest.mark.parametrize("which", ["gen", "edm_gen"])
def test_auggen_with_alpha_one_beta_zero_is_conditional_sampling_bit_for_bit(request, which):
    gen = request.getfixturevalue(which)
    first = sample(gen, PAIRS[:, 0], SEEDS, spec())
    assert torch.equal(sample(gen, PAIRS, SEEDS, spec(strategy="auggen", alpha=1.0, beta=0.0)), first)


def test_mixing_is_wired(gen):
    first, second = sample(gen, PAIRS[:, 0], SEEDS, spec()), sample(gen, PAIRS[:, 1], SEEDS, spec())
    mixes = {
        "scoremix": sample(gen, PAIRS, SEEDS, spec(strategy="scoremix")),
        "auggen": sample(gen, PAIRS, SEEDS, spec(strategy="auggen", alpha=0.7, beta=0.7)),
        "late": sample(gen, PAIRS, SEEDS, spec(strategy="scoremix", step_range=(0.5, 1.0))),
    }
    for name, images in mixes.items():
        for source in (first, second):
            per_image = (images.float() - source.float()).abs().mean(dim=(1, 2, 3))
            assert (per_image > 2).all(), name  # same noise, mixed condition: every image changes
    assert not torch.equal(mixes["late"], mixes["scoremix"])  # mixing only the second half is another image
    whole = sample(gen, PAIRS, SEEDS, spec(strategy="scoremix", step_range=(0.0, 1.0)))
    assert torch.equal(whole, mixes["scoremix"])  # a range covering every step is plain ScoreMix
    batched = sample(gen, PAIRS, SEEDS, spec(strategy="scoremix"), batch_size=4)
    assert torch.equal(batched, mixes["scoremix"])  # per-sample seeds: the batch size changes nothing


def test_scoremix_costs_one_more_evaluation_per_step(gen):
    assert nfe_per_image(gen, spec()) == 12  # class + null
    assert nfe_per_image(gen, spec(strategy="scoremix")) == 18  # class i + class j + null, one batched pass
    assert nfe_per_image(gen, spec(strategy="scoremix", guidance=1.0)) == 12
    assert nfe_per_image(gen, spec(strategy="scoremix", step_range=(0.5, 1.0))) == 15  # mixing half the steps
    assert nfe_per_image(gen, spec(strategy="auggen", alpha=0.7, beta=0.7)) == 12  # one mixed condition


# --- bad settings --------------------------------------------------------------------------------------


def test_weights_outside_their_range_and_misplaced_options_are_errors(gen, gen_dir, tmp_path):
    for bad in ({"weight": 1.5}, {"weight": -0.1}):
        with pytest.raises(ValidationError, match="weight"):
            SampleSpec(strategy="scoremix", **bad)
    for bad in ({"alpha": 0.05}, {"alpha": 1.2}, {"beta": 1.2}, {"beta": -0.1}, {"alpha": "best"}):
        with pytest.raises(ValidationError, match="alpha|beta"):
            SampleSpec(strategy="auggen", **bad)
    misplaced = [
        ({"strategy": "auggen", "weight": 0.5}, "`weight` is a setting of strategy scoremix, not auggen"),
        ({"strategy": "scoremix", "alpha": 0.7}, "`alpha` is a setting of strategy auggen, not scoremix"),
        ({"labels": "soft"}, "`labels` is a setting of strategy auggen and scoremix, not conditional"),
        ({"pairs": "far"}, "`pairs` is a setting of strategy auggen and scoremix, not conditional"),
        ({"strategy": "scoremix", "step_range": (0.6, 0.2)}, r"start < end, got \[0.6, 0.2\]"),
        ({"strategy": "auggen", "alpha": 0.7, "beta": 0.7, "search": {"step": 0.2}}, "neither alpha nor beta"),
    ]
    for kw, message in misplaced:
        with pytest.raises(ValidationError, match=message):
            SampleSpec(**kw)
    grid = {
        "name": "g",
        "dataset": {"name": "digits"},
        "real": {"base": [5]},
        "synthetic": {"volume": [5]},
        "generators": {"mixed": {"sample": {"strategy": "scoremix", "weight": 2.0}}},
        "seeds": [0],
    }
    with pytest.raises(GridError, match=r"generators\.mixed\.sample\.weight"):
        validate_grid(grid)
    with pytest.raises(ValueError, match=r"labels: strategy scoremix samples \(n, 2\) class pairs"):
        sample(gen, PAIRS[:, 0], SEEDS, spec(strategy="scoremix"))
    with pytest.raises(ValueError, match="'search' is resolved by build_sample_set"):
        sample(gen, PAIRS, SEEDS, spec(strategy="auggen"))
    with pytest.raises(ValueError, match=r"sample\.n_pairs: 46 pairs asked for, but 10 classes give 45"):
        select_pairs("random", 10, 46, seed=0)
    with pytest.raises(ValueError, match="pairs 'far' needs the base classifier's embedding space"):
        build_sample_set(
            gen_dir, spec(strategy="scoremix", pairs="far"), 1, "r", tmp_path, device="cpu", progress=False
        )


# --- pairs -----------------------------------------------------------------------------------------------


def test_far_pairs_have_larger_centroid_distance_than_near_pairs(gen, space, gen_dir, tmp_path):
    d = cosine_distances(space.centroids)
    far, near = (select_pairs(rule, 10, 10, seed=1, distances=d) for rule in ("far", "near"))
    assert d[far[:, 0], far[:, 1]].min() >= d[near[:, 0], near[:, 1]].max()
    assert len({tuple(sorted(p)) for p in far.tolist()}) == 10  # distinct pairs
    table = cosine_distances(gen.table[:10].double().numpy())
    far_c, near_c = (select_pairs(r, 10, 10, seed=1, distances=table) for r in ("far-condition", "near-condition"))
    assert table[far_c[:, 0], far_c[:, 1]].min() >= table[near_c[:, 0], near_c[:, 1]].max()
    # through a sample set: the recorded distance of the chosen pairs, in the classifier's space
    info = {rule: build_sample_set(gen_dir, spec(strategy="scoremix", pairs=rule), 1, "r", tmp_path / rule,
                                   device="cpu", progress=False, space=space) for rule in ("far", "near", "random")}  # fmt: skip
    assert info["far"]["pair_distance"] > info["random"]["pair_distance"] > info["near"]["pair_distance"]
    assert info["far"]["pairs"] != info["near"]["pairs"] and info["far"]["n_pairs"] == 10


def test_random_pairs_are_seeded_and_oriented_both_ways():
    a, b = select_pairs("random", 10, 30, seed=7), select_pairs("random", 10, 30, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, select_pairs("random", 10, 30, seed=8))
    assert (a[:, 0] != a[:, 1]).all() and (a[:, 0] < a[:, 1]).any() and (a[:, 0] > a[:, 1]).any()


def test_pair_counts_only_grow_so_smaller_sets_are_prefixes():
    assert pair_counts(30, 7).tolist() == [5, 5, 4, 4, 4, 4, 4] and pair_counts(30, 7).sum() == 30
    counts = np.stack([pair_counts(total, 7) for total in range(80)])
    assert (np.diff(counts, axis=0) >= 0).all() and (counts.sum(1) == np.arange(80)).all()


def test_linear_cka():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)  # rotation, scale and shift do not matter
    assert linear_cka(x, np.hstack([x, np.zeros((40, 3))])) == pytest.approx(1.0)  # nor extra dead features
    assert linear_cka(x, rng.normal(size=(40, 8))) < 0.35  # unrelated representations
    assert linear_cka(x, x[:, :3]) == pytest.approx(linear_cka(x[:, :3], x))  # symmetric
    with pytest.raises(ValueError, match="same n"):
        linear_cka(x, x[:10])


def test_mixing_score_rewards_a_consistent_new_class():
    ci, cj = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    new = np.array([[0, 0, 1.0], [0.1, 0, 1.0], [0, 0.1, 1.0]])  # consistent and away from both sources
    like_i = np.array([[1.0, 0, 0.1], [1.0, 0.1, 0], [1.0, 0, 0]])  # consistent but one of the sources
    scattered = np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]])  # away from the sources but no class
    assert mixing_score(new, ci, cj) > mixing_score(like_i, ci, cj)
    assert mixing_score(new, ci, cj) > mixing_score(scattered, ci, cj)
    assert search_grid(0.1).tolist() == [round(0.1 * k, 1) for k in range(1, 12)]  # the paper's 11 values


# --- sample sets of mixed images ---------------------------------------------------------------------------


def test_mixed_samples_put_their_probability_on_the_two_sources(gen_dir, reference, tmp_path):
    info = build_sample_set(gen_dir, spec(strategy="scoremix"), 4, "r", tmp_path, score=reference, device="cpu",
                            progress=False)  # fmt: skip
    assert info["source_mass"] > 0.6  # chance: 2 of 10 classes
    assert info["source_acc"] > 0.7  # the reference's top class is one of the two sources
    assert 0.2 < info["first_source_mass"] < info["source_mass"] - 0.1  # both sources show, not just one
    assert "cond_acc" not in info  # the class asked for is a mix: no single right answer


def test_mixed_sets_are_prefixes_and_spread_the_volume_over_pairs(gen_dir, tmp_path):
    mixed = spec(strategy="scoremix", n_pairs=7)
    small = build_sample_set(gen_dir, mixed, 2, "r", tmp_path / "v2", device="cpu", progress=False)
    big = build_sample_set(gen_dir, mixed, 3, "r", tmp_path / "v3", device="cpu", progress=False)
    assert (small["n"], big["n"]) == (20, 30) and small["pairs"] == big["pairs"]  # volume x classes, 7 pairs
    for policy in ("new-class", "soft", "dominant"):
        a, b = load_sample_set(tmp_path / "v2", 2, labels=policy), load_sample_set(tmp_path / "v3", 2, labels=policy)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert len(load_sample_set(tmp_path / "v3", 3)) == 30
    labels = load_sample_set(tmp_path / "v3", 2).labels
    assert torch.bincount(labels - 10).tolist() == pair_counts(20, 7).tolist()
    meta = json.loads((tmp_path / "v3" / SAMPLES_META).read_text())
    assert meta["diagnostics"]["weights"] == [0.5, 0.5] and meta["sample"]["strategy"] == "scoremix"


def test_label_policies_and_new_classes_extend_the_classifier(gen_dir, base, digits, tmp_path):
    build_sample_set(gen_dir, spec(strategy="scoremix", weight=0.7, n_pairs=5), 2, "r", tmp_path, device="cpu",
                     progress=False)  # fmt: skip
    pairs = torch.tensor(json.loads((tmp_path / SAMPLES_META).read_text())["diagnostics"]["pairs"])
    new = load_sample_set(tmp_path, 2, labels="new-class")
    assert new.soft is None and sorted(set(new.labels.tolist())) == list(range(10, 15))
    soft = load_sample_set(tmp_path, 2, labels="soft")
    rows = pairs[new.labels - 10]
    idx = torch.arange(len(rows))
    assert torch.allclose(soft.soft[idx, rows[:, 0]], torch.tensor(0.7)) and torch.allclose(
        soft.soft.sum(1), torch.ones(1)
    )
    assert torch.allclose(soft.soft[idx, rows[:, 1]], torch.tensor(0.3))
    assert torch.equal(soft.labels, rows[:, 0]) and torch.equal(
        load_sample_set(tmp_path, 2, labels="dominant").labels, rows[:, 0]
    )

    clf = ClassifierSpec(arch="study_cnn", width=8, steps=10, batch_size=32)
    model, stats = train_classifier(clf, base, 10, seed=0, flip=False, synthetic=new, device="cpu")
    assert stats["num_outputs"] == 15 and model.num_outputs == 15  # 10 classes + one per pair
    metrics = evaluate(model, digits.test, 10, device="cpu")  # evaluated on the dataset's 10 classes only
    assert metrics["n_test"] == len(digits.test) and 0 <= metrics["test_acc"] <= 1
    _, soft_stats = train_classifier(clf, base, 10, seed=0, flip=False, synthetic=soft, device="cpu")
    assert soft_stats["num_outputs"] == 10


def test_auggen_search_is_recorded_and_used(gen_dir, gen, space, tmp_path):
    searched = spec(strategy="auggen", search={"step": 0.5, "pairs": 2, "images": 2})
    info = build_sample_set(gen_dir, searched, 1, "r", tmp_path, device="cpu", progress=False, space=space)
    found = info["search"]
    assert len(found["grid"]) == 9 and {a for a, _, _ in found["grid"]} == {0.1, 0.6, 1.1}
    best = max(found["grid"], key=lambda row: row[2])
    assert [found["alpha"], found["beta"], found["score"]] == best
    assert info["weights"] == [found["alpha"], found["beta"]] and len(found["pairs"]) == 2
    assert json.loads((tmp_path / SAMPLES_META).read_text())["diagnostics"]["search"]["grid"] == found["grid"]
    # the set is sampled with what the search found: image 0 of pair p has the seed of (p, 0)
    fixed = spec(strategy="auggen", alpha=found["alpha"], beta=found["beta"])
    one_each = load_sample_set(tmp_path, 1, labels="new-class")
    pairs = torch.tensor(info["pairs"])[one_each.labels - 10]
    assert torch.equal(sample(gen, pairs, [derive_seed("r", p, 0) for p in range(10)], fixed), one_each.images)
    half = spec(strategy="auggen", alpha=0.7, search={"step": 0.5, "pairs": 1, "images": 2})  # beta alone
    info = build_sample_set(gen_dir, half, 1, "r", tmp_path / "b", device="cpu", progress=False, space=space)
    assert [row[0] for row in info["search"]["grid"]] == [0.7] * 3 and info["weights"][0] == 0.7


def test_alignment_diagnostic(gen_dir, gen, space, tmp_path):
    info = build_sample_set(gen_dir, spec(), 1, "r", tmp_path, device="cpu", progress=False, space=space)
    assert info["cka"] == pytest.approx(linear_cka(gen.table[:10].double().numpy(), space.centroids))
    assert 0.0 < info["cka"] <= 1.0


# --- the plan and the results table --------------------------------------------------------------------------

GRID = """
name: strategies-tiny
dataset: {name: digits}
real: {base: [5, 10]}
synthetic: {volume: [2, 4]}
generators:
  conditional: &gen
    model: {preset: tiny}
    train: {steps: 30, batch_size: 32, warmup: 5}
    sample: {sampler: dpmpp, steps: 3, guidance: 2.0}
  scoremix-far: {<<: *gen, sample: {sampler: dpmpp, steps: 3, guidance: 2.0, strategy: scoremix, pairs: far}}
  scoremix-far-soft:
    <<: *gen
    sample: {sampler: dpmpp, steps: 3, guidance: 2.0, strategy: scoremix, pairs: far, labels: soft}
  auggen:
    <<: *gen
    sample: {sampler: dpmpp, steps: 3, guidance: 2.0, strategy: auggen, search: {step: 1.0, pairs: 2, images: 2}}
  pool-random:
    <<: *gen
    train_on: pool
    sample: {sampler: dpmpp, steps: 3, guidance: 2.0, strategy: scoremix, batch_size: 8}
classifier: {arch: study_cnn, width: 8, steps: 20, batch_size: 32}
seeds: [0]
device: cpu
"""


def test_the_plan_keys_only_what_changes_results(tmp_path):
    grid = validate_grid(yaml.safe_load(GRID))
    plan = make_plan(grid, expand(grid))
    samples = {(n.arm, n.base_per_class): n for n in plan.by_stage("samples")}
    real = {b: classifier_node(grid, Cell(0, b, "real-only", "real-only"), None).key for b in (5, 10)}
    far = samples[("scoremix-far", 5)]
    assert real[5] in far.parents and far.art.config["classifier"] == real[5]  # the base classifier, cached
    assert samples[("scoremix-far", 10)].art.config["classifier"] == real[10]
    # labels are the classifier's business: new-class and soft arms share one sample set, not one classifier
    assert ("scoremix-far-soft", 5) not in samples
    cells = {(c.arm, c.base_per_class, c.volume_per_class): plan.cell_node[c] for c in plan.cells}
    hard, soft = cells[("scoremix-far", 5, 4)], cells[("scoremix-far-soft", 5, 4)]
    assert hard != soft and plan.nodes[soft].art.config["labels"] == "soft"
    assert plan.nodes[hard].parents == plan.nodes[soft].parents
    # a pool generator with random pairs reads no classifier: one sample set serves every base size
    pool = [n for n in plan.by_stage("samples") if n.arm == "pool-random"]
    assert len(pool) == 1 and "classifier" not in pool[0].art.config
    assert "batch_size" not in pool[0].art.config["sample"] and "labels" not in pool[0].art.config["sample"]
    assert samples[("conditional", 5)].art.config["sample"] == {"sampler": "dpmpp", "steps": 3, "guidance": 2.0,
                                                                "strategy": "conditional"}  # fmt: skip
    # 2 bases x 4 grid points x 2 pairs x 2 images x 6 network evaluations (3 guided steps)
    assert "(+ 192 for AugGen's alpha/beta search)" in describe(plan, Store(tmp_path))


@pytest.mark.slow
def test_strategies_end_to_end(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("base: [5, 10]", "base: [5]"))
    assert study_run.main([str(path), "--results", str(tmp_path / "results"), "--quiet"]) == 0
    df = pd.read_csv(tmp_path / "results" / "strategies-tiny" / "cells.csv")
    assert set(df["status"]) == {"done"}
    syn = df[df["arm_kind"].isin(["closed", "open"])].set_index(["arm", "volume_per_class"])
    assert (
        syn.loc[("scoremix-far", 4), "strategy"] == "scoremix-far"
        and syn.loc[("auggen", 4), "strategy"] == "auggen-random"
    )
    assert (
        syn.loc[("scoremix-far-soft", 4), "labels"] == "soft" and syn.loc[("scoremix-far", 4), "labels"] == "new-class"
    )
    assert syn.loc[("conditional", 4), "labels"] == "class" and set(df[df["arm"] == "real-only"]["labels"]) == {"none"}
    assert (syn["n_syn"] == syn.index.get_level_values(1) * 10).all()  # n_syn counts synthetic images
    closed = syn[syn["arm_kind"] == "closed"]
    assert closed["cka"].between(0, 1).all() and pd.isna(syn.loc[("pool-random", 4), "cka"])  # no classifier read
    assert syn.loc[("scoremix-far", 4), ["pair_weight_i", "pair_weight_j"]].tolist() == [0.5, 0.5]
    assert syn.loc[("auggen", 4), "pair_weight_i"] in (0.1, 1.1)  # the search's grid at step 1.0
    mixed = syn[syn["strategy"] != "conditional"]
    assert mixed["source_mass"].between(0, 1).all() and (mixed["n_pairs"] == 10).all()
    assert syn.loc[("scoremix-far", 4), "test_acc"] != syn.loc[("scoremix-far-soft", 4), "test_acc"]
