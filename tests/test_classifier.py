import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from study.data.datasets import Split, real_indices
from study.grid import ClassifierSpec, FractionMix
from study.models.classifier import (
    BatchSampler,
    TrainingError,
    _schedule,
    augment,
    build_classifier,
    evaluate,
    features,
    load_classifier,
    predict_proba,
    save_classifier,
    train_classifier,
)

FAST = ClassifierSpec(arch="study_cnn", width=8, steps=30, batch_size=32, optimizer="adamw", lr=0.003)


def _base(ds, per_class: int, seed: int = 0) -> Split:
    return ds.train.subset(real_indices(ds, seed=seed, per_class=per_class))


# --- models ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet10t"])
@pytest.mark.parametrize(("resolution", "channels"), [(8, 1), (28, 1), (32, 3)])
def test_small_stem_keeps_resolution(arch, resolution, channels):
    model = build_classifier(ClassifierSpec(arch=arch), num_classes=7, channels=channels, resolution=resolution)
    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    first = convs[0]
    assert first.in_channels == channels and first.stride == (1, 1) and first.kernel_size == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.net.modules())
    x = torch.randint(0, 256, (2, channels, resolution, resolution), dtype=torch.uint8)
    model.eval()
    assert model(x).shape == (2, 7)
    # ResNet stages downsample 8x in all: with the small stem the last feature map is resolution / 8.
    assert model.net.forward_features(x.float()).shape[-1] == -(-resolution // 8)


@pytest.mark.parametrize("arch", ["efficientnet_b0", "convnext_atto", "densenet121"])
def test_small_stem_on_other_families(arch):
    model = build_classifier(ClassifierSpec(arch=arch), num_classes=5, channels=3, resolution=32).eval()
    first = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == (1, 1) and first.kernel_size == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.net.modules())
    assert model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 5)
    assert model.net.forward_features(torch.zeros(2, 3, 32, 32)).shape[-1] >= 2  # 32 px not shrunk to 1x1


def test_stock_stem_is_kept_on_request():
    model = build_classifier(ClassifierSpec(arch="resnet18", stem="stock"), num_classes=3, channels=3, resolution=32)
    assert model.net.conv1.stride == (2, 2) and isinstance(model.net.maxpool, nn.MaxPool2d)


def test_study_cnn_is_a_timm_model():
    import timm

    net = timm.create_model("study_cnn", num_classes=4, in_chans=3, width=8)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert net.forward_head(net.forward_features(torch.randn(2, 3, 16, 16)), pre_logits=True).shape == (2, 32)


def test_model_kwargs_reach_timm_and_bad_ones_are_named():
    def last_bn(spec):
        return build_classifier(spec, num_classes=2, channels=1, resolution=28).net.layer1[0].bn2.weight

    assert torch.all(last_bn(ClassifierSpec()) == 0)  # timm's default: each block starts as the identity
    assert torch.all(last_bn(ClassifierSpec(model_kwargs={"zero_init_last": False})) == 1)
    with pytest.raises(ValueError, match=r"classifier.model_kwargs: 'resnet18' does not accept \{'bogus': 1\}"):
        build_classifier(ClassifierSpec(model_kwargs={"bogus": 1}), num_classes=2, channels=1, resolution=28)
    with pytest.raises(ValueError, match=r"classifier.model_kwargs: \['in_chans'\] are set by the study"):
        build_classifier(ClassifierSpec(model_kwargs={"in_chans": 3}), num_classes=2, channels=1, resolution=28)


def test_empty_model_kwargs_leave_keys_unchanged():
    # Specs written before the field existed must keep their keys (and so their cached results).
    assert "model_kwargs" not in ClassifierSpec().model_dump()
    assert ClassifierSpec(model_kwargs={"drop_rate": 0.1}).model_dump()["model_kwargs"] == {"drop_rate": 0.1}


def test_bad_arch_and_width_are_named():
    with pytest.raises(ValueError, match="classifier.arch: 'small-cnn' is not a timm model name"):
        build_classifier(ClassifierSpec(arch="small-cnn"), 10, 1, 8)
    with pytest.raises(ValueError, match="classifier.width: .* not 'efficientnet_b0'"):
        build_classifier(ClassifierSpec(arch="efficientnet_b0", width=8), 10, 1, 8)
    with pytest.raises(ValueError, match="classifier.stem: 'vit_tiny_patch16_224' has no convolutional stem"):
        build_classifier(ClassifierSpec(arch="vit_tiny_patch16_224"), 10, 3, 32)


# --- batches and augmentation ------------------------------------------------------------------------------


def test_fraction_batches_hold_exactly_that_share():
    sampler = BatchSampler(100, 37, 64, FractionMix(fraction=0.5), torch.Generator().manual_seed(0))
    for _ in range(20):
        idx = sampler.next()
        assert len(idx) == 64 and int((idx >= 100).sum()) == 32
    odd = BatchSampler(100, 37, 10, FractionMix(fraction=0.33), torch.Generator().manual_seed(0))
    assert int((odd.next() >= 100).sum()) == 3  # round(0.33 * 10)


def test_uniform_batches_cover_the_concatenation_evenly():
    sampler = BatchSampler(30, 90, 40, "uniform", torch.Generator().manual_seed(0))
    idx = torch.cat([sampler.next() for _ in range(30)])  # 10 passes over the 120 images
    assert torch.equal(torch.bincount(idx, minlength=120), torch.full((120,), 10))


def test_fraction_that_leaves_no_synthetic_images_is_an_error():
    with pytest.raises(ValueError, match="fraction=0.1 with batch_size 4 gives 0 synthetic images"):
        BatchSampler(10, 10, 4, FractionMix(fraction=0.1), torch.Generator())


def test_augment_crops_within_padding_and_flips_only_when_allowed():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6).repeat(50, 1, 1, 1)
    assert torch.equal(augment(images, gen, pad=0, flip=False), images)
    cropped = augment(images, gen, pad=1, flip=False)
    padded = nn.functional.pad(images, (1, 1, 1, 1))
    for i in range(len(images)):  # every output is one of the 9 windows of its padded image, unflipped
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    flipped = augment(images, gen, pad=0, flip=True)
    mirrored = [torch.equal(flipped[i], images[i].flip(-1)) for i in range(len(images))]
    assert 20 < sum(mirrored) < 80


# --- training --------------------------------------------------------------------------------------------


@pytest.fixture
def step_counter():
    counts = {"steps": 0}
    handle = register_optimizer_step_post_hook(lambda *_: counts.__setitem__("steps", counts["steps"] + 1))
    yield counts
    handle.remove()


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        ("multistep", 0, {0: 1.0, 49: 1.0, 50: 0.1, 74: 0.1, 75: 0.01, 99: 0.01}),  # MedMNIST v2's drops
        ("cosine", 10, {0: 0.1, 9: 1.0, 10: 1.0, 55: 0.5, 99: 0.0003}),
    ],
)
def test_learning_rate_schedules(schedule, warmup, expected):
    spec = FAST.model_copy(update={"schedule": schedule, "warmup": warmup, "lr": 1.0})
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=spec.lr)
    scheduler, lrs = _schedule(spec, optimizer, 100), []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert {step: round(lrs[step], 4) for step in expected} == expected


def test_fixed_budget_takes_the_same_steps_for_100_and_1000_images(digits, step_counter):
    _, small = train_classifier(FAST, _base(digits, 10), 10, seed=0, flip=False)
    assert step_counter["steps"] == FAST.steps
    _, large = train_classifier(FAST, _base(digits, 100), 10, seed=0, flip=False)
    assert step_counter["steps"] == 2 * FAST.steps
    assert small["steps"] == large["steps"] == FAST.steps
    assert small["n_real"] == 100 and large["n_real"] == 1000


def test_epoch_budget_scales_with_data(digits):
    spec = FAST.model_copy(update={"steps": None, "epochs": 2})
    _, stats = train_classifier(spec, _base(digits, 10), 10, seed=0, flip=False)
    assert stats["steps"] == 7  # ceil(2 * 100 / 32)


def test_fraction_mix_is_realised_in_training(digits):
    real, syn = _base(digits, 10), _base(digits, 5, seed=1)
    _, stats = train_classifier(FAST, real, 10, seed=0, flip=False, synthetic=syn, mix=FractionMix(fraction=0.5))
    assert stats["synthetic_share"] == 0.5 and stats["mix"] == "fraction=0.5"
    _, stats = train_classifier(FAST, real, 10, seed=0, flip=False, synthetic=syn)
    assert stats["mix"] == "uniform" and abs(stats["synthetic_share"] - 50 / 150) < 0.02


def test_same_seed_same_metrics(digits):
    real = _base(digits, 10)
    runs = [evaluate(train_classifier(FAST, real, 10, seed=s, flip=False)[0], digits.test, 10) for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0]["test_nll"] != runs[2]["test_nll"]


def test_evaluate_returns_every_metric(digits):
    model, stats = train_classifier(FAST, _base(digits, 20), 10, seed=0, flip=False)
    m = evaluate(model, digits.test, 10)
    assert set(m) == {"test_acc", "test_bacc", "test_auc", "test_auc_n", "test_auc_n_note", "test_nll", "test_ece",
                      "per_class_acc", "n_test"}  # fmt: skip
    assert m["test_auc_n"] > 0 and m["test_auc_n_note"] == ""
    assert m["n_test"] == len(digits.test) and len(m["per_class_acc"]) == 10
    assert m["test_acc"] > 0.3  # 30 steps on 200 digits: well above chance (0.1)
    assert features(model, digits.test.images[:5]).shape == (5, model.net.num_features)
    assert np.isfinite(stats["final_loss"]) and stats["images_per_s"] > 0


def test_soft_targets_train(digits):
    """Images labelled half 0, half 1 are learnt as such: the model spreads its probability over both."""
    real = _base(digits, 10)
    zeros, ones = digits.train.images[digits.train.labels == 0][:20], digits.train.images[digits.train.labels == 1][:20]
    blend = ((zeros.float() + ones.float()) / 2).round().to(torch.uint8)
    soft = torch.zeros(20, 10)
    soft[:, :2] = 0.5
    syn = Split(blend, torch.zeros(20, dtype=torch.long), soft)
    spec = FAST.model_copy(update={"steps": 150, "augment": False})
    model, stats = train_classifier(spec, real, 10, seed=0, flip=False, synthetic=syn, mix=FractionMix(fraction=0.5))
    probs = predict_proba(model, blend, 10)
    assert stats["num_outputs"] == 10
    assert np.all(probs[:, 0] > 0.2) and np.all(probs[:, 1] > 0.2) and np.all(probs[:, :2].sum(1) > 0.8)


def test_new_classes_add_outputs_and_are_dropped_in_evaluation(digits):
    real = _base(digits, 10)
    noise = torch.randint(0, 256, (20, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    syn = Split(noise, torch.full((20,), 11))  # a new mixed class beyond the dataset's 10
    spec = FAST.model_copy(update={"steps": 100, "augment": False})
    model, stats = train_classifier(spec, real, 10, seed=0, flip=False, synthetic=syn)
    assert stats["num_outputs"] == 12 and model.num_outputs == 12
    model.eval()
    with torch.no_grad():
        assert (model(noise).argmax(1) == 11).float().mean() > 0.9
    assert predict_proba(model, noise, 10).shape == (20, 10)
    assert evaluate(model, digits.test, 10)["n_test"] == len(digits.test)


def test_nan_loss_fails_clearly(digits):
    spec = FAST.model_copy(update={"optimizer": "sgd", "lr": 1e12, "steps": 50})
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at step \d+/50 .*lower classifier.lr"):
        train_classifier(spec, _base(digits, 10), 10, seed=0, flip=False)


def test_bad_inputs_are_named(digits):
    real = _base(digits, 5)
    wrong_size = Split(torch.zeros(4, 1, 16, 16, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"synthetic: images are \(1, 16, 16\), expected \(1, 8, 8\)"):
        train_classifier(FAST, real, 10, seed=0, flip=False, synthetic=wrong_size)
    bad_soft = Split(real.images[:4], real.labels[:4], torch.full((4, 10), 0.5))
    with pytest.raises(ValueError, match="synthetic.soft: every row must be a probability distribution"):
        train_classifier(FAST, real, 10, seed=0, flip=False, synthetic=bad_soft)
    with pytest.raises(ValueError, match="classifier.select: 'val_acc' needs a val split"):
        train_classifier(FAST.model_copy(update={"select": "val_acc"}), real, 10, seed=0, flip=False)
    with pytest.raises(ValueError, match="classifier.precision: fp16 needs a CUDA device"):
        train_classifier(FAST.model_copy(update={"precision": "fp16"}), real, 10, seed=0, flip=False, device="cpu")


def test_val_selection_keeps_the_best_checkpoint(digits):
    real, val = _base(digits, 10), _base(digits, 5, seed=1)
    spec = FAST.model_copy(update={"select": "val_acc", "val_checks": 3})
    _, stats = train_classifier(spec, real, 10, seed=0, flip=False, val=val)
    trace = dict(stats["val_trace"])
    assert sorted(trace) == [10, 20, 30]
    assert stats["selected_step"] == max(trace, key=lambda s: (trace[s], -s))
    assert stats["val_acc"] == trace[stats["selected_step"]]


def test_save_and_load_give_the_same_predictions(digits, tmp_path):
    model, _ = train_classifier(FAST, _base(digits, 10), 10, seed=0, flip=False)
    save_classifier(model, FAST, tmp_path, num_classes=10)
    again = load_classifier(tmp_path, device="cpu")
    x = digits.test.images[:50]
    np.testing.assert_array_equal(predict_proba(model, x, 10), predict_proba(again, x, 10))
    with pytest.raises(FileNotFoundError, match="holds no saved classifier"):
        load_classifier(tmp_path / "missing")
