"""Classifiers: any timm model (small-image stems for 8-64 px), trained on real + synthetic images with a fixed
step budget, evaluated on the real test split.

    model = build_classifier(spec, num_classes=10, channels=1, resolution=8)
    model, stats = train_classifier(spec, real, num_classes=10, seed=0, flip=False,
                                    synthetic=syn, mix=FractionMix(fraction=0.3))
    evaluate(model, ds.test, num_classes=10)   # test_acc, _bacc, _auc, _auc_n, _nll, _ece, per_class_acc
    features(model, images)                    # penultimate features (class centroids, diagnostics)

Comparability across cells: by default every cell takes the same number of optimisation steps of the same
batch size, whatever its training-set size (adding data must not also add compute). The seed alone fixes the
initial weights, the batch order and the augmentation draws, so two cells with the same seed differ only in
their data (common random numbers: less noise in differences between arms).

Cost on one CPU thread (measured, `python -m study.bench classifier`): `study_cnn` (width 24) on 8x8 digits,
150 steps of 128 images, ~2 s; ResNet-18 with a small stem at 28-32 px, ~35-40 training images/s.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.optim import create_optimizer_v2

from study.data.datasets import Split
from study.errors import ModelSpecError
from study.grid import ClassifierSpec, FractionMix, MixSpec, mix_label
from study.keys import derive_seed
from study.metrics import classification_metrics
from study.models.device import autocast, resolve_device, resolve_precision
from study.store import CLASSIFIER_META, CLASSIFIER_WEIGHTS, atomic_path, atomic_write_json, read_artifact_json

SMALL_STEM_MAX_PX = 64  # inputs up to this size get the small stem under `stem: auto`
FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused SGD and AdamW kernels


class TrainingError(RuntimeError):
    """Training diverged (non-finite loss) or cannot start; the message says where and what to change."""


# --- the fast CPU default: a small CNN registered with timm ----------------------------------------------


class StudyCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU blocks of width w, 2w, 4w (2x2 max-pool after the last two), global average
    pool, linear head. Created by name: `timm.create_model("study_cnn")` once study.models.classifier is imported.

    Chosen by measurement as the CPU default for tiny images (grids/quickstart.yaml). On 8x8 digits, 19,200
    training images per cell, mean test accuracy over 5 seeds at 5 / 20 / 100 images per class, and one-thread
    training speed as images/s and fraction of the fastest fp32 matmul (`python -m study.bench classifier`):

        width 16, 300 x 64:   0.895 / 0.966 / 0.990   13.5k images/s   0.30
        width 16, 150 x 128:  0.891 / 0.964 / 0.984   17.2k images/s   0.38
        width 24, 150 x 128:  0.894 / 0.969 / 0.990    9.3k images/s   0.45   <- the default
        width 32, 150 x 128:  0.900 / 0.971 / 0.991    6.9k images/s   0.60

    timm's resnet10t at width 16 scored 0.872 / 0.970 / 0.989 at 3x the time per step. The accuracies are
    equal within noise; below width 24 most of the step goes to BatchNorm, ReLU, pooling and the optimiser
    at 8x8 (convolutions are ~50% of the profile), which is why the default is the cheapest setting that
    spends at least 0.4 of the machine's matmul rate — at 1.45x the time per image of width 16."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 32, drop_rate: float = 0.0):
        super().__init__()

        def block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
            layers = [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))

        self.num_classes = num_classes
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_chans, width, 3, 1, 1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(width))
        self.stem.add_module("act", nn.ReLU(inplace=True))
        self.stages = nn.Sequential(block(width, 2 * width, pool=True), block(2 * width, 4 * width, pool=True))
        self.num_features = self.head_hidden_size = 4 * width
        self.head = ClassifierHead(self.num_features, num_classes, pool_type="avg", drop_rate=drop_rate)
        self.feature_info = [
            {"num_chs": width, "reduction": 1, "module": "stem"},
            {"num_chs": 4 * width, "reduction": 4, "module": "stages"},
        ]

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {"study_cnn": {"num_classes": 10, "input_size": (1, 8, 8), "first_conv": "stem.conv", "classifier": "head.fc"}}
)


@register_model
def study_cnn(pretrained: bool = False, **kwargs) -> StudyCNN:
    return build_model_with_cfg(StudyCNN, "study_cnn", pretrained, **kwargs)


# --- building models ---------------------------------------------------------------------------------------


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)


def apply_small_stem(net: nn.Module, arch: str) -> nn.Module:
    """Make the stem keep the input resolution: the first conv becomes 3x3 stride 1 and stem max-pools go.
    ImageNet stems (7x7 stride 2 + max-pool, or a 4x4 patchify) lose 10-15 points at 32 px."""
    first = net.pretrained_cfg.get("first_conv")
    if not first or hasattr(net, "patch_embed"):
        raise ModelSpecError(
            f"classifier.stem: {arch!r} has no convolutional stem to shrink (a patch-embedding model?); "
            f"use `stem: stock` and a patch size that fits the resolution"
        )
    conv = _get(net, first)
    if not isinstance(conv, nn.Conv2d):
        raise ModelSpecError(
            f"classifier.stem: the first layer {first!r} of {arch!r} is {type(conv).__name__}, not a Conv2d"
        )
    _set(net, first, nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None))
    # The stem's max-pool is the first one, if at most 3 convs (plain or deep stem) come before it; later
    # max-pools belong to the body and stay.
    convs = 0
    for name, module in net.named_modules():
        convs += isinstance(module, nn.Conv2d)
        if isinstance(module, nn.MaxPool2d):
            if convs <= 3:
                _set(net, name, nn.Identity())
            break
    return net


def _width_kwargs(arch: str, width: int | None) -> dict:
    if width is None:
        return {}
    if arch == "study_cnn":
        return {"width": width}
    if arch.startswith(("resnet", "resnext", "wide_resnet", "seresnet")):
        return {"channels": (width, 2 * width, 4 * width, 8 * width)}  # stage widths; timm keeps a 64-wide stem
    raise ModelSpecError(f"classifier.width: supported for study_cnn and timm ResNet-family models, not {arch!r}")


class ImageClassifier(nn.Module):
    """A timm network behind a fixed input normalisation: takes images on the uint8 scale (0..255, any dtype)."""

    def __init__(self, net: nn.Module, num_classes: int, channels: int, resolution: int):
        super().__init__()
        self.net = net
        self.num_outputs, self.channels, self.resolution = num_classes, channels, resolution
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 127.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 63.75))

    def trained(self) -> nn.Module:
        """The module whose parameters the optimiser updates: the timm network (the wrapper has none of its own)."""
        return self.net

    def set_normalization(self, images: torch.Tensor) -> None:
        """Per-channel mean and std of the (real) training images, on the 0..255 scale."""
        x = images.double().transpose(0, 1).reshape(self.channels, -1)
        self.mean.copy_(x.mean(1).view_as(self.mean))
        self.std.copy_(x.std(1).clamp_min(1.0).view_as(self.std))

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._normalize(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(self._normalize(images)), pre_logits=True)


def build_classifier(spec: ClassifierSpec, num_classes: int, channels: int, resolution: int) -> ImageClassifier:
    """A freshly initialised timm model `spec.arch` (global RNG: seed it first) with `num_classes` outputs; with
    `spec.embedding`, a face embedding model with a margin-loss head over them (study.models.embedding)."""
    if spec.embedding is not None:
        from study.models.embedding import build_embedding_model  # it imports this module

        return build_embedding_model(spec, num_classes, channels, resolution)
    return ImageClassifier(build_network(spec, num_classes, channels, resolution), num_classes, channels, resolution)


def build_network(spec: ClassifierSpec, num_classes: int, channels: int, resolution: int) -> nn.Module:
    """The timm network `spec.arch` with the small-image stem where it applies; `num_classes` 0: pooled features."""
    if not timm.is_model(spec.arch):
        close = timm.list_models(f"*{spec.arch.replace('-', '*')[:12]}*")[:10]
        raise ModelSpecError(
            f"classifier.arch: {spec.arch!r} is not a timm model name (e.g. study_cnn, resnet18, resnet10t"
            + (f"; similar: {', '.join(close)}" if close else "")
            + ")"
        )
    kwargs = {"num_classes": num_classes, "in_chans": channels, **_width_kwargs(spec.arch, spec.width)}
    if clash := sorted(set(spec.model_kwargs) & {*kwargs, "pretrained"}):
        raise ModelSpecError(f"classifier.model_kwargs: {clash} are set by the study (use the classifier keys instead)")
    try:
        net = timm.create_model(spec.arch, pretrained=False, **kwargs, **spec.model_kwargs)
    except TypeError as e:  # an argument the model's constructor does not take
        raise ModelSpecError(f"classifier.model_kwargs: {spec.arch!r} does not accept {spec.model_kwargs}: {e}") from e
    small = spec.stem == "small" or (spec.stem == "auto" and resolution <= SMALL_STEM_MAX_PX)
    if small and spec.arch != "study_cnn":  # study_cnn's stem is already 3x3 stride 1
        net = apply_small_stem(net, spec.arch)
    return net


# --- batches ---------------------------------------------------------------------------------------------


class IndexStream:
    """An endless sequence of indices 0..n-1: one random permutation after another (every image is seen
    equally often, up to the last partial epoch)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.gen, self.buf = n, generator, torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> torch.Tensor:
        while len(self.buf) < k:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.gen)])
        out, self.buf = self.buf[:k], self.buf[k:]
        return out


class BatchSampler:
    """Pool indices (real images first, then synthetic) for one training batch after another.

    uniform: `batch_size` draws from one stream over the concatenation, so the synthetic share follows the
    pool (the source paper's policy). fraction p: every batch holds exactly round(p * batch_size) synthetic
    images from a synthetic stream and the rest from a real stream."""

    def __init__(self, n_real: int, n_syn: int, batch_size: int, mix: MixSpec, generator: torch.Generator):
        self.n_real, self.batch_size = n_real, batch_size
        self.syn_per_batch = 0 if n_syn == 0 or mix == "uniform" else round(mix.fraction * batch_size)
        if n_syn and mix != "uniform" and not 0 < self.syn_per_batch < batch_size:
            raise ModelSpecError(
                f"classifier mix {mix_label(mix)} with batch_size {batch_size} gives {self.syn_per_batch} synthetic "
                "images per batch; choose a fraction and batch size that leave both real and synthetic images"
            )
        if self.syn_per_batch:
            self.streams = [IndexStream(n_real, generator), IndexStream(n_syn, generator)]
        else:
            self.streams = [IndexStream(n_real + n_syn, generator)]

    @property
    def real_per_batch(self) -> int:
        return self.batch_size - self.syn_per_batch

    def next(self) -> torch.Tensor:
        if not self.syn_per_batch:
            return self.streams[0].take(self.batch_size)
        return torch.cat(
            [self.streams[0].take(self.real_per_batch), self.n_real + self.streams[1].take(self.syn_per_batch)]
        )


def augment(images: torch.Tensor, generator: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after zero padding by `pad` pixels, then (where allowed) horizontal flips; uint8 in and out."""
    n, _, h, w = images.shape
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
        rows = (dy + torch.arange(h).view(1, h, 1)).expand(n, h, w)
        cols = (dx + torch.arange(w).view(1, 1, w)).expand(n, h, w)
        images = padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mirror.view(n, 1, 1, 1), images.flip(-1), images)
    return images


def crop_padding(resolution: int) -> int:
    """Padding for the random crop: 4 px at 32 px (the CIFAR recipe), 3 at 28, 1 at 8: an eighth of the side."""
    return max(1, resolution // 8)


# --- training --------------------------------------------------------------------------------------------


def _targets(split: Split, num_outputs: int) -> torch.Tensor:
    """(N, num_outputs) target distributions: soft rows where given, else one-hot labels."""
    if split.soft is None:
        return F.one_hot(split.labels, num_outputs).float()
    soft = split.soft.float()
    if soft.ndim != 2 or len(soft) != len(split) or soft.shape[1] > num_outputs:
        raise ValueError(f"synthetic.soft: expected shape ({len(split)}, <= {num_outputs}), got {tuple(soft.shape)}")
    rows_ok = torch.isfinite(soft).all() and (soft >= 0).all() and torch.allclose(soft.sum(1), torch.ones(1), atol=1e-3)
    if not rows_ok:
        raise ValueError("synthetic.soft: every row must be a probability distribution (finite, >= 0, sums to 1)")
    return F.pad(soft, (0, num_outputs - soft.shape[1]))


def _check_split(split: Split, name: str, channels: int, resolution: int) -> None:
    shape = tuple(split.images.shape)
    if split.images.dtype != torch.uint8 or split.images.ndim != 4:
        raise ValueError(f"{name}: images must be uint8 (N, C, H, W), got {split.images.dtype} {shape}")
    if shape[1:] != (channels, resolution, resolution):
        raise ValueError(
            f"{name}: images are {shape[1:]}, expected ({channels}, {resolution}, {resolution}) "
            "like the real training images"
        )
    if len(split) == 0:
        raise ValueError(f"{name}: no images")
    if split.labels.min() < 0:
        raise ValueError(f"{name}: negative label {int(split.labels.min())}")


def training_pool(real: Split, synthetic: Split | None, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Images (real first, then synthetic), their (N, outputs) targets, and the number of outputs:
    max(num_classes, soft width, largest synthetic label + 1)."""
    channels, resolution = real.images.shape[1], real.images.shape[-1]
    _check_split(real, "real", channels, resolution)
    if real.labels.max() >= num_classes:
        raise ValueError(f"real: label {int(real.labels.max())} is outside 0..{num_classes - 1}")
    if synthetic is None:
        return real.images, _targets(real, num_classes), num_classes
    _check_split(synthetic, "synthetic", channels, resolution)
    soft_width = synthetic.soft.shape[-1] if synthetic.soft is not None else 0
    outputs = max(num_classes, int(synthetic.labels.max()) + 1, soft_width)
    images = torch.cat([real.images, synthetic.images])
    return images, torch.cat([_targets(real, outputs), _targets(synthetic, outputs)]), outputs


def _budget(spec: ClassifierSpec, batches: BatchSampler, n_real: int, n_syn: int) -> int:
    """Optimisation steps: `spec.steps`, or enough for `spec.epochs` passes over the training set (uniform) or
    over the real images (fraction mix, where the synthetic share of each batch is fixed)."""
    if spec.steps is not None:
        return spec.steps
    if batches.syn_per_batch:
        return math.ceil(spec.epochs * n_real / batches.real_per_batch)
    return math.ceil(spec.epochs * (n_real + n_syn) / spec.batch_size)


def _schedule(spec: ClassifierSpec, optimizer: torch.optim.Optimizer, steps: int):
    if spec.schedule == "onecycle":
        pct = min(spec.warmup / steps, 0.9) if spec.warmup else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=steps, pct_start=pct)

    def factor(step: int) -> float:  # linear warmup, then cosine decay to zero at the last step or two drops
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        if spec.schedule == "multistep":  # MedMNIST v2's MultiStepLR: x0.1 at half and at three quarters
            return 0.1 ** ((step >= steps // 2) + (step >= steps * 3 // 4))
        return 0.5 * (1 + math.cos(math.pi * (step - spec.warmup) / max(1, steps - spec.warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Selection:
    """Model selection on the val split: score at `checks` evenly spaced steps, keep the best weights
    (the earliest among ties)."""

    def __init__(self, spec: ClassifierSpec, steps: int, val: Split | None, num_classes: int):
        if spec.select != "last" and val is None:
            raise ModelSpecError(
                f"classifier.select: {spec.select!r} needs a val split; this dataset has none (use `last`)"
            )
        self.metric, self.val, self.num_classes, self.batch_size = spec.select, val, num_classes, spec.eval_batch_size
        n = spec.val_checks
        self.checks = set() if spec.select == "last" else {round(steps * (i + 1) / n) for i in range(n)}
        self.best, self.best_score, self.best_step, self.trace = None, -math.inf, steps, []

    def after_step(self, step: int, model: ImageClassifier, device: torch.device) -> None:
        if step not in self.checks:
            return
        score = evaluate(model, self.val, self.num_classes, device=device, batch_size=self.batch_size, prefix="val")
        score = score[self.metric]
        model.train()
        self.trace.append((step, score))
        if score > self.best_score:
            self.best_score, self.best_step = score, step
            self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: ImageClassifier) -> None:
        if self.best is not None:
            model.load_state_dict(self.best)


def train_classifier(
    spec: ClassifierSpec,
    real: Split,
    num_classes: int,
    *,
    seed: int,
    flip: bool,
    synthetic: Split | None = None,
    mix: MixSpec = "uniform",
    val: Split | None = None,
    device: str = "auto",
    progress: bool = False,
) -> tuple[ImageClassifier, dict]:
    """Train `spec.arch` on `real` (+ `synthetic`, mixed by `mix`) for a fixed budget; return it and its stats.

    `synthetic` may carry soft targets (`Split.soft`, (N, K)) and labels >= num_classes (new classes made by
    mixing): the output layer then has max(num_classes, K, labels.max() + 1) units. `mix` "uniform" samples
    batches uniformly from the concatenation; `FractionMix(p)` puts exactly round(p * batch_size) synthetic
    images in every batch. `val` serves model selection (`spec.select`) and is scored into the stats.
    """
    # Data, budget and precision.
    dev = resolve_device(device)
    precision = resolve_precision(spec.precision, dev, key="classifier.precision")
    synthetic = synthetic if synthetic is not None and len(synthetic) else None
    if not (mix == "uniform" or isinstance(mix, FractionMix)):
        raise ValueError(f"classifier.mix: expected 'uniform' or {{fraction: p}}, got {mix!r}")
    images, targets, num_outputs = training_pool(real, synthetic, num_classes)
    margin = spec.embedding is not None and spec.embedding.loss != "softmax"
    if margin and synthetic is not None and synthetic.soft is not None:
        raise ValueError(
            f"synthetic: soft targets have no single class for the {spec.embedding.loss} margin; label mixed images "
            "`new-class` or `dominant`, or use `classifier.embedding.loss: softmax`"
        )
    n_real, n_syn = len(real), len(images) - len(real)
    batch_rng = torch.Generator().manual_seed(derive_seed(seed, "classifier-batches"))
    batches = BatchSampler(n_real, n_syn, spec.batch_size, mix, batch_rng)
    steps = _budget(spec, batches, n_real, n_syn)
    selection = _Selection(spec, steps, val, num_classes)
    pad = crop_padding(real.images.shape[-1]) if spec.augment else 0
    augment_rng = torch.Generator().manual_seed(derive_seed(seed, "classifier-augment"))

    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        # Model: initial weights (and dropout, if any) come from the global RNG, seeded for this seed only.
        torch.manual_seed(derive_seed(seed, "classifier-init"))
        model = build_classifier(spec, num_outputs, real.images.shape[1], real.images.shape[-1])
        model.set_normalization(real.images)
        model = model.to(dev, memory_format=torch.channels_last)
        # timm's "sgd" is Nesterov momentum; norm and bias parameters get no weight decay. The fused (one-kernel)
        # update is ~7% faster end to end for study_cnn on CPU, where the per-parameter loop shows.
        optimizer = create_optimizer_v2(
            model.trained(), opt=spec.optimizer, lr=spec.lr, weight_decay=spec.weight_decay,
            fused=dev.type in FUSED_DEVICES,
        )  # fmt: skip
        scheduler = _schedule(spec, optimizer, steps)
        scaler = torch.amp.GradScaler(dev.type, enabled=precision.name == "fp16")

        # Train.
        model.train()
        losses, seen_syn, start = [], 0, time.perf_counter()
        for step in _progress(range(1, steps + 1), progress, f"classifier {spec.arch}"):
            idx = batches.next()
            seen_syn += int((idx >= n_real).sum())
            x = augment(images[idx], augment_rng, pad, flip) if spec.augment else images[idx]
            x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(dev, precision.name):
                # A margin head (study.models.embedding) needs each image's class: the margin goes on its logit.
                logits = model(x, targets[idx].argmax(1).to(dev)) if margin else model(x)
            loss = F.cross_entropy(logits.float(), targets[idx].to(dev), label_smoothing=spec.label_smoothing)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise TrainingError(
                    f"classifier training diverged: loss is {losses[-1]} at step {step}/{steps} "
                    f"(arch {spec.arch}, lr {spec.lr:g}, precision {precision.name}); lower classifier.lr or use fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            selection.after_step(step, model, dev)
        seconds = time.perf_counter() - start

    # Select and report.
    selection.restore(model)
    model.eval()
    stats = {
        "steps": steps,
        "batch_size": spec.batch_size,
        "seconds": seconds,
        "images_per_s": steps * spec.batch_size / seconds,
        "final_loss": float(np.mean(losses[-max(1, steps // 10) :])),  # mean over the last 10% of steps
        **precision.stats(),
        "device": str(dev),
        "mix": mix_label(mix) if synthetic is not None else "none",
        "synthetic_share": seen_syn / (steps * spec.batch_size),  # the mix actually realised
        "n_real": n_real,
        "n_synthetic": n_syn,
        "num_outputs": num_outputs,
        "epochs": steps * spec.batch_size / (n_real + n_syn),
        "selected_step": selection.best_step,
    }
    if selection.trace:
        stats["val_trace"] = selection.trace
    if val is not None:
        stats |= evaluate(model, val, num_classes, device=dev, batch_size=spec.eval_batch_size, prefix="val")
    return model, stats


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


# --- inference and evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def _batched(model: nn.Module, fn, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    dev = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(dev).contiguous(memory_format=torch.channels_last)
        out.append(fn(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict_proba(
    model: ImageClassifier, images: torch.Tensor, num_classes: int, *, device="auto", batch_size: int = 512
) -> np.ndarray:
    """Class probabilities over the dataset's `num_classes` (outputs for extra mixed classes are dropped first)."""
    model = model.to(resolve_device(device) if isinstance(device, str) else device)
    logits = _batched(model, model, images, device, batch_size)[:, :num_classes]
    return torch.softmax(logits.double(), dim=1).numpy()


def features(model: ImageClassifier, images: torch.Tensor, *, device="auto", batch_size: int = 512) -> np.ndarray:
    """Penultimate (pre-logit) features, (N, model.net.num_features)."""
    model = model.to(resolve_device(device) if isinstance(device, str) else device)
    return _batched(model, model.features, images, device, batch_size).numpy()


def evaluate(
    model: ImageClassifier,
    split: Split,
    num_classes: int,
    *,
    device="auto",
    batch_size: int = 512,
    prefix: str = "test",
) -> dict:
    """`{prefix}_acc, _bacc, _auc, _nll, _ece`, `per_class_acc` and `n_{prefix}` on `split` (see study.metrics),
    and `{prefix}_auc_n`, the AUC's noise model for the equivalence analysis: its effective binomial trials
    A (1 - A) / Var(A), Var by Hanley & McNeil (1982) (study.metrics.auc_trials; the one-vs-rest macro mean's
    variance as mean(V_c) / K). NaN where undefined (AUC 0 or 1, one class alone in the split), and then
    `{prefix}_auc_n_note` says why (empty otherwise)."""
    m = classification_metrics(
        predict_proba(model, split.images, num_classes, device=device, batch_size=batch_size),
        split.labels.numpy(),
        num_classes,
    )
    per_class, n = m.pop("per_class_acc"), m.pop("n")
    out = {f"{prefix}_{k}": v for k, v in m.items()}
    out["per_class_acc" if prefix == "test" else f"{prefix}_per_class_acc"] = per_class
    out[f"n_{prefix}"] = n
    return out


# --- save / load -------------------------------------------------------------------------------------------


def save_classifier(model: ImageClassifier, spec: ClassifierSpec, out_dir: Path, *, num_classes: int) -> None:
    """Weights (safetensors, with the input normalisation) and what is needed to rebuild the model (json);
    `num_classes` is the dataset's (the model may have more outputs: classes made by mixing)."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / CLASSIFIER_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    meta = {
        "spec": spec.model_dump(mode="json"),
        "num_classes": num_classes,
        "num_outputs": model.num_outputs,
        "channels": model.channels,
        "resolution": model.resolution,
    }
    atomic_write_json(out_dir / CLASSIFIER_META, meta)


def load_classifier(out_dir: Path, *, device="auto") -> ImageClassifier:
    out_dir = Path(out_dir)
    meta = read_artifact_json(out_dir / CLASSIFIER_META, "classifier")
    spec = ClassifierSpec.model_validate(meta["spec"], strict=False)
    model = build_classifier(spec, meta["num_outputs"], meta["channels"], meta["resolution"])
    model.load_state_dict(load_file(str(out_dir / CLASSIFIER_WEIGHTS)))
    dev = resolve_device(device) if isinstance(device, str) else device
    return model.to(dev, memory_format=torch.channels_last).eval()  # as trained: same kernels, same numbers


__all__ = [
    "FractionMix",
    "ImageClassifier",
    "StudyCNN",
    "TrainingError",
    "build_classifier",
    "evaluate",
    "features",
    "load_classifier",
    "predict_proba",
    "save_classifier",
    "train_classifier",
]
