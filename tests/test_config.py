"""Grid files: strict schema errors name the file and key path; smoke merge; expansion; key stability."""

from __future__ import annotations

import textwrap

import pytest

from study.grid import GridError, expand, load_grid, validate_grid
from study.runner.plan import make_plan

GRID = """
name: t
dataset: {name: digits}
real: {base: [5, 10], extra: [5, 10, 20]}
synthetic: {volume: [10, 20, 40]}
generators:
  closed: &gen {model: {preset: tiny}, train: {steps: 100}, sample: {steps: 10}}
  scoremix: {<<: *gen, sample: {steps: 10, strategy: scoremix}}
  open: {<<: *gen, train_on: pool}
classifier: {arch: resnet18, steps: 50}
seeds: [0, 1, 2]
smoke: {real: {base: [5]}, generators: {closed: {train: {steps: 3}}}}
"""


def write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def bad(tmp_path, text) -> str:
    path = write(tmp_path, text)
    with pytest.raises(GridError) as err:
        load_grid(path)
    msg = str(err.value)
    assert str(path) in msg  # every error names the file
    return msg


def test_expansion_counts(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    cells = expand(grid)
    # per seed and base: 1 real-only + 3 real-extra + 3 arms x 3 volumes = 13
    assert len(cells) == 3 * 2 * 13
    assert sum(c.arm_kind == "real-only" for c in cells) == 6
    assert sum(c.arm_kind == "real-extra" for c in cells) == 18
    assert sum(c.arm == "scoremix" for c in cells) == 18
    assert {c.arm_kind for c in cells if c.arm == "open"} == {"open"}
    assert {c.arm_kind for c in cells if c.arm == "closed"} == {"closed"}
    assert len(set(cells)) == len(cells)


def test_ratio_volumes_follow_the_base(tmp_path):
    grid = load_grid(write(tmp_path, GRID.replace("volume: [10, 20, 40]", "ratio: [0.5, 1, 2]")))
    vols = {(c.base_per_class, c.volume_per_class) for c in expand(grid) if c.arm == "closed"}
    assert vols == {(5, 2), (5, 5), (5, 10), (10, 5), (10, 10), (10, 20)}


def test_smoke_deep_merges(tmp_path):
    grid = load_grid(write(tmp_path, GRID), smoke=True)
    assert grid.real.base == [5]
    assert grid.generators["closed"].train.steps == 3
    assert grid.generators["closed"].sample.steps == 10  # untouched keys survive the merge
    assert grid.generators["open"].train.steps == 100  # other arms are untouched...
    star = GRID.replace("generators: {closed: {train: {steps: 3}}}", "generators: {'*': {train: {steps: 3}}}")
    grid = load_grid(write(tmp_path, star), smoke=True)
    assert {g.train.steps for g in grid.generators.values()} == {3}  # ...unless `*` is used


def test_smoke_errors(tmp_path):
    no_smoke = write(
        tmp_path, GRID.replace("smoke: {real: {base: [5]}, generators: {closed: {train: {steps: 3}}}}", "")
    )
    with pytest.raises(GridError, match="no `smoke:` block"):
        load_grid(no_smoke, smoke=True)
    unknown_arm = write(tmp_path, GRID.replace("generators: {closed:", "generators: {nope:"))
    with pytest.raises(GridError, match="smoke.generators.nope: no such arm"):
        load_grid(unknown_arm, smoke=True)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: t", "name: t\nbogus: 1", "bogus: unknown key"),
        (
            "train: {steps: 100}, sample",
            "train: {steps: 100, stesp: 4}, sample",
            "generators.closed.train.stesp: unknown key",
        ),
        ("train: {steps: 100}", "train: {steps: -5}", "generators.closed.train.steps: Input should be greater than 0"),
        (
            "train: {steps: 100}",
            "train: {steps: '100'}",
            "generators.closed.train.steps: Input should be a valid integer",
        ),
        ("base: [5, 10]", "base: []", "real.base: List should have at least 1 item"),
        ("base: [5, 10]", "base: [5, -10]", "real.base[1]: Input should be greater than 0"),
        ("base: [5, 10]", "base: [5, 5]", "real.base: values must be distinct"),
        ("volume: [10, 20, 40]", "volume: [10], ratio: [1.0]", "synthetic: give either `volume` or `ratio`, not both"),
        ("seeds: [0, 1, 2]", "seeds: []", "seeds: List should have at least 1 item"),
        ("{name: digits}", "{name: mnist}", "dataset.name: unknown dataset 'mnist'"),
        ("{name: digits}", "{name: digits, flavor: x}", "dataset.flavor: unknown key"),
        ("{name: digits}", "{name: npz}", "dataset.path: required key is missing"),
        (
            "sample: {steps: 10}}",
            "sample: {steps: 10, guidance: -1}}",
            "generators.closed.sample.guidance: Input should be greater than or equal to 0",
        ),
        ("sample: {steps: 10}}", "sample: {steps: 10, sampler: euler}}", "generators.closed.sample.sampler"),
        ("  open: {<<: *gen, train_on: pool}", "  real-only: {<<: *gen}", "arm name 'real-only'"),
        ("steps: 50}", "steps: 50, mix: {fraction: 1.5}}", "classifier.mix.fraction: Input should be less than 1"),
        ("steps: 50}", "steps: null}", "exactly one training budget"),
        ("name: t", "name: t\nanalysis: {published: cifar100}", "analysis.published: Input should be 'cifar10'"),
        ("name: t", "name: t\nanalysis: {publish: cifar10}", "analysis.publish: unknown key"),
        (
            "{name: digits}",
            "{name: medmnist, flavor: bloodmnist}\nanalysis: {published: cifar10}",
            "analysis.published is 'cifar10' but the dataset is 'bloodmnist'",
        ),
    ],
)
def test_strict_schema_errors_name_the_key(tmp_path, old, new, expected):
    assert old in GRID, old
    assert expected in bad(tmp_path, GRID.replace(old, new))


def test_duplicate_arm_names_are_an_error(tmp_path):
    text = GRID.replace("  open: {<<: *gen, train_on: pool}", "  closed: {<<: *gen, train_on: pool}")
    assert "duplicate key 'closed'" in bad(tmp_path, text)


def test_merge_keys_may_be_overridden(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    assert grid.generators["open"].train_on == "pool"  # overrides the merged `train_on: base`
    assert grid.generators["scoremix"].model.preset == "tiny"  # inherits from the anchor


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(GridError, match="grid file not found"):
        load_grid(tmp_path / "nope.yaml")
    assert "not valid YAML" in bad(tmp_path, "name: [unclosed")
    assert "expected a mapping" in bad(tmp_path, "- a\n- b\n")


def test_env_vars_and_home_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_DATA", "/data/here")
    text = GRID.replace("{name: digits}", "{name: npz, path: '${STUDY_DATA}/x.npz'}")
    assert load_grid(write(tmp_path, text)).dataset.path == "/data/here/x.npz"
    text = GRID.replace("{name: digits}", "{name: npz, path: '~/x.npz'}")
    assert not load_grid(write(tmp_path, text)).dataset.path.startswith("~")
    monkeypatch.delenv("STUDY_DATA")
    assert "${STUDY_DATA} is not set" in bad(
        tmp_path, GRID.replace("{name: digits}", "{name: npz, path: '${STUDY_DATA}/x.npz'}")
    )
    text = GRID.replace("{name: digits}", "{name: npz, path: '${STUDY_DATA:-/fallback}/x.npz'}")
    assert load_grid(write(tmp_path, text)).dataset.path == "/fallback/x.npz"


def keys(grid):
    plan = make_plan(grid, expand(grid))
    return {n.stage: sorted(x.key for x in plan.by_stage(n.stage)) for n in plan.nodes.values()}


def test_keys_are_stable_and_only_track_what_matters(tmp_path):
    base = load_grid(write(tmp_path, GRID))
    assert keys(base) == keys(load_grid(write(tmp_path, GRID, "copy.yaml")))
    # settings that do not change results stay out of keys
    unkeyed = (
        GRID.replace("name: t", "name: t\ndevice: cpu\nanalysis: {published: cifar10}")
        .replace("sample: {steps: 10}}", "sample: {steps: 10, batch_size: 7}}")
        .replace("train: {steps: 100}", "train: {steps: 100, checkpoint_every: 3}")
    )
    assert keys(load_grid(write(tmp_path, unkeyed))) == keys(base)
    # 1 and 1.0 are the same setting
    same = GRID.replace("classifier: {arch: resnet18, steps: 50}", "classifier: {arch: resnet18, steps: 50, lr: 0.1}")
    assert keys(load_grid(write(tmp_path, same))) == keys(base)
    # training steps change the generator key, and everything downstream of it, but not real classifiers
    more = load_grid(write(tmp_path, GRID.replace("train: {steps: 100}", "train: {steps: 200}")))
    k1, k2 = keys(base), keys(more)
    assert not set(k1["generator"]) & set(k2["generator"])
    assert k1["reference"] == k2["reference"]
    real = lambda g: {make_plan(g, expand(g)).cell_node[c] for c in expand(g) if c.arm_kind == "real-only"}  # noqa: E731
    assert real(base) == real(more)


def test_sharing_in_the_plan(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    plan = make_plan(grid, expand(grid))
    # closed and scoremix share one generator per (base, seed); open (pool) shares one per seed
    assert len(plan.by_stage("generator")) == 3 * 2 + 3
    # one sample set (largest volume) per generator and sampling spec: closed and scoremix per base and
    # seed, open (pool-trained) per seed only
    assert len(plan.by_stage("samples")) == 3 * 2 * 2 + 3
    assert {n.volume_per_class for n in plan.by_stage("samples")} == {40}
    # one judge per seed; diagnostics per (sample set, base): closed and scoremix per base and seed, the open
    # set (shared by every base) once per base, each on the largest prefix a cell at that base trains on
    assert sorted(n.seed for n in plan.by_stage("reference")) == [0, 1, 2]
    diagnostics = plan.by_stage("diagnostics")
    assert len(diagnostics) == 3 * 2 * 2 + 3 * 2 and {n.volume_per_class for n in diagnostics} == {40}
    assert all(plan.cell_diagnostics[c] for c in plan.cells if c.arm_kind in ("closed", "open"))
    assert not any(set(n.parents) & {d.key for d in diagnostics} for n in plan.nodes.values())  # leaves
    # real-extra (5 + 5) trains on the same real images as real-only 10: one shared classifier
    cells = {(c.arm, c.base_per_class, c.extra_per_class, c.seed): plan.cell_node[c] for c in plan.cells}
    assert cells[("real-extra", 5, 5, 0)] == cells[("real-only", 10, 0, 0)]
    assert cells[("real-extra", 5, 5, 0)] != cells[("real-extra", 5, 5, 1)]
    # parents come before children
    seen = set()
    for node in plan.nodes.values():
        assert set(node.parents) <= seen
        seen.add(node.key)


def test_validate_grid_accepts_a_dict():
    grid = validate_grid({"name": "x", "dataset": {"name": "digits"}, "real": {"base": [3]}, "seeds": [0]})
    assert [c.arm for c in expand(grid)] == ["real-only"]


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).parent.parent / "grids").glob("*.yaml")))
@pytest.mark.parametrize("smoke", [False, True])
def test_shipped_grids_are_valid(path, smoke):
    grid = load_grid(path, smoke=smoke)
    assert expand(grid)
    assert path.read_text().startswith("#")  # each file's header says what it studies and costs


def test_shipped_grids_name_the_published_setting_they_reproduce():
    grids = __import__("pathlib").Path(__file__).parent.parent / "grids"
    assert load_grid(grids / "cifar.yaml").analysis.published == "cifar10"  # an npz: the data cannot say
    assert load_grid(grids / "imagenet100.yaml").analysis.published == "imagenet100"  # an image folder
    assert load_grid(grids / "quickstart.yaml").analysis.published is None


def test_diagnostics_keys_follow_their_settings_and_the_fid_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("STUDY_INCEPTION_WEIGHTS", raising=False)
    grid = load_grid(write(tmp_path, GRID))
    diag = lambda g: {n.key for n in make_plan(g, expand(g)).by_stage("diagnostics")}  # noqa: E731
    samples = lambda g: {n.key for n in make_plan(g, expand(g)).by_stage("samples")}  # noqa: E731
    no_cas = load_grid(write(tmp_path, GRID + "diagnostics: {cas: false}\n", "nocas.yaml"))
    assert not diag(grid) & diag(no_cas) and samples(grid) == samples(no_cas)  # only the diagnostics change
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"weights")
    monkeypatch.setenv("STUDY_INCEPTION_WEIGHTS", str(weights))  # the standard FID joins the key by content
    with_fid = diag(grid)
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(b"weights")
    monkeypatch.setenv("STUDY_INCEPTION_WEIGHTS", str(moved))
    assert diag(grid) == with_fid  # the same file elsewhere: the same keys
    monkeypatch.delenv("STUDY_INCEPTION_WEIGHTS")
    assert not diag(grid) & with_fid
