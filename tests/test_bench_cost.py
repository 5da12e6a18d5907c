"""`python -m study.bench cost`: FLOPs counted per network, multiplied by the plan's counts, turned into GPU-hours."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from study.bench import cost
from study.grid import ModelSpec, expand, load_grid
from study.runner.plan import make_plan, sample_nfe_per_image

REPO = Path(__file__).resolve().parent.parent

GRID = REPO / "grids" / "imagenet100.yaml"


def test_flops_of_known_layers():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert cost.count_flops(lambda: conv(x)) == 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 x B x Cout x H x W x Cin x k^2
    linear = torch.nn.Linear(5, 7)
    inputs = torch.randn(4, 5)  # no input gradient: backward computes only the weight gradient, as large as forward
    assert cost.count_flops(lambda: linear(inputs).sum().backward()) == 2 * (2 * 4 * 5 * 7)


def test_per_image_flops_scale_with_the_batch():
    """Counted at COUNT_BATCH images and scaled: exact, since every counted operation is per image."""
    from study.models.generator import build_unet

    shape = cost.Shape(classes=3, channels=3, resolution=16, test=9, val=0, pool=None)
    model = ModelSpec(preset="tiny")
    torch.manual_seed(0)
    unet = build_unet(model, 16, 3, 3)
    x, t, y = torch.randn(5, 3, 16, 16), torch.full((5,), 10), torch.zeros(5, dtype=torch.long)
    five = cost.count_flops(lambda: F.mse_loss(unet(x, t, y).sample, x).backward())
    assert cost.unet_flops(model, shape, True) == pytest.approx(five / 5, rel=1e-9)
    assert cost.unet_flops(model, shape, True) == pytest.approx(3 * cost.unet_flops(model, shape, False), rel=0.01)


def test_the_plan_counts_are_multiplied(monkeypatch):
    """The smoke grid (3 classes, 3 test images each) with stub per-image FLOPs: every count by hand."""
    monkeypatch.setattr(cost, "unet_flops", lambda model, shape, training: 1000.0 if training else 10.0)
    monkeypatch.setattr(cost, "classifier_flops", lambda spec, shape, k, training: 100.0 if training else 1.0)
    grid = load_grid(GRID, smoke=True)
    shape = cost.dataset_shape(grid, classes=3, test_per_class=3)
    work = cost.grid_work(grid, shape)
    totals = {key: n for key, (n, _) in cost.summary(work).items()}

    samples = next(n for n in make_plan(grid, expand(grid)).nodes.values() if n.stage == "samples")
    assert sample_nfe_per_image(grid, samples) == 8  # DPM-Solver++, 4 steps, guided: 2 evaluations a step
    assert totals[("generator", "UNet tiny", True)] == 10 * 8  # steps x batch
    assert totals[("samples", "UNet tiny", False)] == 8 * 2 * 3  # NFE per image x volume 2 x 3 classes
    assert totals[("samples", "resnet18", False)] == 2 * 3  # the judge scores each sample
    assert totals[("reference", "resnet18", True)] == 10 * 16
    assert totals[("classifier", "resnet18", True)] == 3 * 10 * 16  # real-only, real-extra, closed
    assert totals[("classifier", "resnet18", False)] == 3 * 9  # each scores the test split
    assert totals[("diagnostics", "study_cnn (domain)", True)] == 2 * 10 * 32  # folds x steps x batch
    assert totals[("diagnostics", "resnet18 (CAS)", True)] == 10 * 16
    assert totals[("diagnostics", "study_cnn (domain)", False)] == 2 * 2 * 3  # samples and as many real, held out
    # samples, base, 8 outside-base blocks, the balanced pool sample (at most 500 a class)
    assert totals[("diagnostics", "resnet18 (judge features)", False)] == (2 + 2 + 8 * 2 + 500) * 3
    flops = 80 * 1000 + 48 * 10 + 6 + (160 + 480 + 640 + 160) * 100 + 9 + 27 + 1560 + 12 + 9
    assert sum(w.flops for w in work) == flops
    assert cost.gpu_hours(flops) == pytest.approx(flops / (312e12 * cost.UTILISATION) / 3600)
    md = cost.cost_markdown(grid, shape, work, cost.UTILISATION)
    assert f"{cost.gpu_hours(flops):,.3g} GPU-hours" in md and "NVIDIA A100" in md


def test_the_utilisation_figure_is_edm_imagenet64():
    """2,500 Mimg x 618.7 GFLOP over 32 A100 x 13 days at 312 TFLOP/s."""
    assert pytest.approx(2.5e9 * 618.689e9 / (32 * 13 * 86400 * 312e12)) == cost.UTILISATION
    assert 0.13 < cost.UTILISATION < 0.15


@pytest.mark.slow
def test_adm64_flops_as_stated():
    """The ADM network built with diffusers has EDM's parameter count, and three times its forward FLOPs are the
    training FLOPs the constant holds (counted with backward once: 618.689 GFLOP; ~5 CPU-s, ~1.5 GB)."""
    torch.manual_seed(0)
    unet = cost.adm64_unet()
    assert sum(p.numel() for p in unet.parameters()) / 1e6 == pytest.approx(295.9, rel=0.005)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        forward = cost.count_flops(lambda: unet(x, torch.tensor([10]), torch.tensor([3])))
    assert pytest.approx(cost.ADM64_TRAIN_FLOPS, rel=1e-3) == 3 * forward


def _grid_with(tmp_path, **override) -> str:
    raw = yaml.safe_load(GRID.read_text())
    for key, value in override.items():
        raw[key] = {**raw[key], **value}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_grid_whose_networks_cannot_be_built_is_a_clear_error(tmp_path, capsys):
    bad_arch = _grid_with(tmp_path, classifier={"arch": "no_such_net"})
    assert cost.main([bad_arch, "--classes", "10", "--test-per-class", "5"]) == 2
    err = capsys.readouterr().err
    assert "classifier.arch" in err and "no_such_net" in err

    small = _grid_with(tmp_path, dataset={"resolution": 4})  # preset l downsamples 3 times
    assert cost.main([small, "--classes", "10", "--test-per-class", "5"]) == 2
    err = capsys.readouterr().err
    assert "model.preset" in err and "resolution 4" in err


def test_the_shape_needs_the_data_or_the_options(tmp_path, capsys):
    assert cost.main([str(GRID), "--classes", "100"]) == 2  # no --test-per-class
    assert "--test-per-class" in capsys.readouterr().err
    missing = _grid_with(tmp_path, dataset={"root": str(tmp_path / "nowhere")})
    assert cost.main([missing]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_cpu_check_predicts_from_the_peak_and_fraction(monkeypatch):
    """The prediction is counted FLOPs / (peak x fraction); the measured time is whatever the machine gives."""
    monkeypatch.setattr(cost, "matmul_flops", lambda dtype, clock: 50e9)
    grid = load_grid(GRID, smoke=True)
    shape = cost.dataset_shape(grid, classes=3, test_per_class=3)
    rows = cost.check_cpu(grid, shape, batch=2, fraction=0.5, steps=1)
    assert [r["network"] for r in rows] == ["UNet tiny", "resnet18"]
    for r in rows:
        assert r["predicted_s"] == pytest.approx(r["gflop_per_step"] * 1e9 / (50e9 * 0.5))
        assert r["measured_s"] > 0 and math.isfinite(r["ratio"])
    assert "measured/predicted" in cost.check_markdown(rows, 0.5, "test")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet100.yaml", "imagenet100-32.yaml"])
def test_grid_headers_state_what_the_command_prints(name):
    """The GPU-hours in each ImageNet grid's header are the command's (FLOPs counted for real: ~10 CPU-s)."""
    path = REPO / "grids" / name
    grid = load_grid(path)
    work = cost.grid_work(grid, cost.dataset_shape(grid, classes=100, test_per_class=50))
    hours = cost.gpu_hours(sum(w.flops for w in work))
    stated = float(re.search(r"~([\d,.]+) GPU-hours", path.read_text()).group(1).replace(",", ""))
    assert stated == pytest.approx(hours, rel=0.01)
    assert f"python -m study.bench cost grids/{name} --classes 100 --test-per-class 50" in path.read_text()
