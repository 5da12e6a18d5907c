"""The classifier reference check's bookkeeping: cached runs are found by recipe, recipes of one dataset are
reported side by side and pooled, figures keep the keys bench.json promises. No training here."""

import json

from study.bench.classifier import references, run_file, run_reference


def _fake_runs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    refs = references(tmp_path / "data")
    for i, ref in enumerate(refs):
        for seed in ref.seeds:
            result = {
                "test_acc": 0.80 + 0.01 * i + 0.01 * seed,
                "test_auc": 0.90,
                "seconds": 60.0,
                "steps": 427,
                "n_test": 156,
            }
            run_file(ref, seed, runs).write_text(json.dumps(result | {"threads": 1}))
    return refs, runs


def test_reference_check_reads_cached_runs_and_pools_recipes(tmp_path):
    refs, runs = _fake_runs(tmp_path)
    figures, markdown = run_reference(tmp_path / "data", runs)
    assert {"breastmnist_acc", "breastmnist_auc", "pneumoniamnist_acc", "pneumoniamnist_auc"} <= set(figures)
    assert abs(figures["breastmnist_acc"] - 0.81) < 1e-9  # seeds 0, 1, 2 of the first recipe: 0.80, 0.81, 0.82
    assert abs(figures["breastmnist_short_acc"] - 0.82) < 1e-9
    assert "| breastmnist (short) | 3 |" in markdown and "| 0.863 |" in markdown  # published number beside it
    assert "breastmnist, all 2 recipes (6 runs): ACC 0.815 ± 0.010" in markdown
    assert "427 x 128" in markdown  # an epoch budget shows the steps it took
    assert "binomial standard error of 2.8 points at the published 0.863" in markdown  # sqrt(.863 * .137 / 156)
    assert "breastmnist: `" in markdown and "augmentation: none" in markdown


def test_recipes_are_cached_apart(tmp_path):
    refs = [ref for ref in references(tmp_path) if ref.name == "breastmnist"]
    assert len(refs) == 2 and run_file(refs[0], 0, tmp_path) != run_file(refs[1], 0, tmp_path)


def test_bench_json_keeps_the_other_mode_and_replaces_this_one(tmp_path):
    from study.bench.classifier import _merge

    _merge("reference", {"breastmnist_acc": 0.85}, "ref table", tmp_path)
    _merge("throughput", {"old_name": 1.0, "train_flops_fraction": 0.3}, "old", tmp_path)
    _merge("throughput", {"train_flops_fraction": 0.45}, "new", tmp_path)
    section = json.loads((tmp_path / "bench.json").read_text())["classifier"]
    assert section["breastmnist_acc"] == 0.85 and section["train_flops_fraction"] == 0.45
    assert "old_name" not in section
    assert (tmp_path / "bench.md").read_text().count("ref table") == 1
