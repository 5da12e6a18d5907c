"""The closed-set generator: a class-conditional pixel-space diffusion model on diffusers' `UNet2DModel`.

    stats = train_generator(model_spec, train_spec, images, labels, num_classes, out_dir, seed=0, flip=False)
    gen = load_generator(out_dir)                  # Generator: condition vectors in, epsilon out
    eps = gen.eps(x_t, t, gen.condition(labels))   # row `num_classes` of the class table is the null class

The UNet carries a learned class table `nn.Embedding(C + 1, D)`; index C is the null class that label
dropout trains for classifier-free guidance. The final EMA weights are saved with `save_pretrained`
(safetensors) under `out_dir/unet`, so `UNet2DModel.from_pretrained(out_dir / "unet")` gives a working
class-conditional model with integer `class_labels`. `load_generator` lifts the class table out of the UNet
so conditions are vectors that sampling strategies can mix (AugGen adds class embeddings).

What the network is trained to output (epsilon, v or an EDM denoiser) and its loss live in
study.models.objectives; `Generator.eps` always returns epsilon, so every sampler and sampling strategy works
with every objective. For an EDM model, `UNet2DModel.from_pretrained(out_dir / "unet")` is the raw network F of
the denoiser: feed it c_in x and c_noise (study.models.objectives), or use `load_generator`.

Cost on one core of the shared 2-core CPU (process CPU time, bf16 chosen by `precision: auto` on this AMX
machine; reports/bench.md): preset `tiny` on 8x8 digits, 200 EDM steps of 128 images (the quickstart), ~0.3
CPU-minutes, after which the judge reads the asked-for class in 99.6% of samples; preset `s` at 16 px RGB,
~90 training images per CPU-second; at 32 px ~25-35.
"""

from __future__ import annotations

import collections
import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from study.errors import ModelSpecError
from study.grid import GeneratorTrainSpec, ModelSpec
from study.keys import derive_seed
from study.models.device import Precision, autocast, resolve_device, resolve_precision
from study.models.objectives import Objective, make_objective
from study.store import (
    GENERATOR_CHECKPOINT,
    GENERATOR_META,
    SCHEDULER_DIR,
    UNET_DIR,
    as_disk_full,
    atomic_path,
    atomic_write_json,
    read_artifact_json,
    read_json,
)


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


# --- presets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    channels: tuple[int, ...]  # block widths, top (full resolution) to bottom; len - 1 downsamplings
    layers_per_block: int
    attention: tuple[int, ...]  # levels with self-attention, counted from the bottom (0 = lowest resolution)
    mid_attention: bool
    norm_groups: int
    head_dim: int = 32


# Parameters and training FLOPs per 32 px RGB image: tiny 0.16M (the 8x8 digits quickstart), xs 1.1M
# (1.5 GFLOP), s 3.9M (3.2 GFLOP; CPU studies at 28-32 px), m 16M (13 GFLOP), l 36M (36 GFLOP: the DDPM
# CIFAR-10 network, widths 128-256-256-256, two res blocks, attention at 16x16; GPU).
PRESETS: dict[str, Preset] = {
    "tiny": Preset((16, 32), 1, (), False, 8),
    "xs": Preset((32, 64, 64), 1, (0,), True, 8),
    "s": Preset((32, 64, 128), 2, (0,), True, 16),
    "m": Preset((64, 128, 256), 2, (0,), True, 32),
    "l": Preset((128, 256, 256, 256), 2, (2,), True, 32),
}


def preset_channels(model: ModelSpec) -> tuple[int, ...]:
    return tuple(model.channels) if model.channels else PRESETS[model.preset].channels


def check_resolution(model: ModelSpec, resolution: int) -> None:
    """Every downsampling halves the feature map; it must stay whole and at least 2 pixels a side."""
    downs = len(preset_channels(model)) - 1
    if resolution % 2**downs or resolution // 2**downs < 2:
        raise ModelSpecError(
            f"model.preset: {model.preset!r} (block widths {list(preset_channels(model))}) downsamples "
            f"{downs} times, so it needs a resolution that is a multiple of {2**downs} and at least "
            f"{2 ** (downs + 1)} px; got resolution {resolution}. Pick a smaller preset or set dataset.resolution."
        )


def check_model(model: ModelSpec, resolution: int) -> None:
    """The settings `build_unet` needs, checked without building it (the runner's pre-flight does this)."""
    check_resolution(model, resolution)
    widths, groups = preset_channels(model), PRESETS[model.preset].norm_groups
    if any(w % groups for w in widths):
        raise ModelSpecError(
            f"model.channels: every block width must be a multiple of {groups} (GroupNorm), got {list(widths)}"
        )


def build_unet(model: ModelSpec, resolution: int, channels: int, num_classes: int) -> nn.Module:
    """A `UNet2DModel` with a class table of `num_classes + 1` rows (the last is the null class)."""
    from diffusers import UNet2DModel

    check_model(model, resolution)
    preset = PRESETS[model.preset]
    widths = preset_channels(model)
    groups = preset.norm_groups
    levels = len(widths)
    lowest = preset.attention if model.attention is None else (0,) if model.attention else ()
    attn = [levels - 1 - i in lowest for i in range(levels)]  # top to bottom
    unet = UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        layers_per_block=model.layers_per_block or preset.layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        add_attention=preset.mid_attention if model.attention is None else model.attention,
        attention_head_dim=preset.head_dim,
        norm_num_groups=groups,
        dropout=model.dropout,
        num_class_embeds=num_classes + 1,
    )
    check_conditioning(unet, resolution, channels, num_classes)
    return unet


@torch.no_grad()
def check_conditioning(unet: nn.Module, resolution: int, channels: int, num_classes: int) -> None:
    """Fail loudly if class labels would be ignored (diffusers once dropped `class_labels` silently)."""
    table = getattr(unet, "class_embedding", None)
    if not isinstance(table, nn.Embedding):
        raise ValueError(f"the UNet has no class table (class_embedding is {table!r}); class labels would be ignored")
    if table.num_embeddings != num_classes + 1:
        raise ValueError(
            f"the UNet's class table has {table.num_embeddings} rows, expected {num_classes + 1} "
            f"({num_classes} classes + the null class)"
        )
    device = next(unet.parameters()).device
    x = torch.zeros(1, channels, resolution, resolution, device=device).expand(2, -1, -1, -1)
    out = unet(x, torch.tensor([500, 500], device=device), torch.tensor([0, num_classes], device=device)).sample
    if torch.equal(out[0], out[1]):
        raise ValueError("the UNet gives the same output for two class labels; class labels would be ignored")


# --- the loaded generator ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Generator:
    """A trained generator for sampling. Conditions are vectors: row c of `table` is class c, row
    `num_classes` is the null class; any mixture of rows is a valid condition."""

    unet: nn.Module  # UNet2DModel whose class_embedding is the identity: it adds the condition vector it gets
    table: torch.Tensor  # (num_classes + 1, D) class embeddings
    scheduler_config: dict  # the noise schedule samplers step on (diffusers DDPMScheduler config)
    alphas_cumprod: torch.Tensor  # (T,) float64 on the CPU
    num_classes: int
    resolution: int
    channels: int
    prediction: str  # epsilon | v_prediction | edm (what the network outputs; `eps` always returns epsilon)
    objective: Objective  # turns the network's output into epsilon (study.models.objectives)
    precision: Precision  # autocast precision for sampling, and why
    device: torch.device
    net_batch: int  # rows per network call (fixed, so results never depend on the batch size)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """Condition vectors for integer labels (0..C-1 classes, C = null)."""
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.table.device)
        if labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes} ({self.num_classes} = null class)")
        return self.table[labels]

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """The noise prediction for x_t at timestep t (a scalar or one per row) under condition vectors `cond`,
        whatever the network was trained to output (eps, v, or an EDM denoiser)."""
        n = len(x)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(n) if t.ndim == 0 else t
        if len(cond) != n or len(t) != n:
            raise ValueError(f"eps: {n} inputs but {len(cond)} condition vectors and {len(t)} timesteps")
        alpha, sigma = self._alpha_sigma(t, n)
        return self.objective.eps(self._net, x, t, cond, alpha, sigma)

    def _net(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The network's raw output. It always runs on batches of exactly `net_batch` rows (the last one padded):
        CPU kernels pick different summation orders for different batch shapes, and a sample must not depend on
        its batch."""
        n = len(x)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        b = self.net_batch
        for i in range(0, n, b):
            xs, ts, cs = x[i : i + b], t[i : i + b], cond[i : i + b].to(x.dtype)
            m = len(xs)
            if m < b:  # pad with copies of the first row; their outputs are dropped
                xs, ts, cs = (torch.cat([v, v[:1].expand(b - m, *v.shape[1:])]) for v in (xs, ts, cs))
            with autocast(self.device, self.precision.name):
                out[i : i + m] = self.unet(xs, ts, class_labels=cs).sample[:m].float()
        return out

    def _alpha_sigma(self, t: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """a_t = sqrt(alphabar_t) and s_t = sqrt(1 - alphabar_t), (n, 1, 1, 1). Fractional timesteps (Heun/Karras)
        are placed by log-sigma interpolation, as diffusers does."""
        ac = self.alphas_cumprod
        log_sigma = 0.5 * torch.log((1 - ac) / ac)
        tt = t.double().cpu().clamp(0, len(ac) - 1)
        lo = tt.floor().long()
        hi = (lo + 1).clamp(max=len(ac) - 1)
        w = tt - lo
        sigma = torch.exp((1 - w) * log_sigma[lo] + w * log_sigma[hi])
        a = (1 / torch.sqrt(1 + sigma**2)).float().view(n, 1, 1, 1).to(self.device)
        return a, (sigma.float().view(n, 1, 1, 1).to(self.device) * a)


def load_generator(out_dir: Path, *, device: str = "auto", precision: str = "auto") -> Generator:
    """Load a generator saved by `train_generator` (diffusers `from_pretrained`); `precision` of sampling
    (study.models.device: `auto` chooses by the machine)."""
    from diffusers import DDPMScheduler, UNet2DModel

    out_dir = Path(out_dir)
    meta = read_artifact_json(out_dir / GENERATOR_META, "generator")
    dev = resolve_device(device)
    unet = UNet2DModel.from_pretrained(out_dir / UNET_DIR).to(dev).eval().requires_grad_(False)
    num_classes = meta["num_classes"]
    check_conditioning(unet, meta["resolution"], meta["channels"], num_classes)
    scheduler = DDPMScheduler.from_pretrained(out_dir / SCHEDULER_DIR)
    table = unet.class_embedding.weight.detach().clone()
    unet.class_embedding = nn.Identity()  # the UNet now adds whatever condition vector it is given
    if meta.get("model"):
        model = ModelSpec.model_validate(meta["model"], strict=False)
    else:  # a pretrained UNet re-saved by study.sampling.pretrained: its scheduler says what it outputs
        output = scheduler.config.prediction_type
        if output not in ("epsilon", "v_prediction"):
            raise ModelSpecError(
                f"{out_dir}: the UNet predicts {output!r}; study samples epsilon or v_prediction models"
            )
        model = ModelSpec(prediction=output)
    train = GeneratorTrainSpec.model_validate(meta.get("train") or {}, strict=False)  # older models: defaults
    return as_generator(unet, table, scheduler, model, train, meta["resolution"], meta["channels"], dev, precision)


def as_generator(unet, table, scheduler, model, train, resolution, channels, device, precision="auto") -> Generator:
    """A `Generator` around a UNet whose class embedding is already lifted into `table` (load_generator; the
    bench wraps EMA copies of a model in training)."""
    dev = resolve_device(device)
    return Generator(
        unet=unet,
        table=table,
        scheduler_config=dict(scheduler.config),
        alphas_cumprod=scheduler.alphas_cumprod.double(),
        num_classes=len(table) - 1,
        resolution=resolution,
        channels=channels,
        prediction=model.prediction,
        objective=make_objective(model, train),
        precision=resolve_precision(precision, dev, key="precision"),
        device=dev,
        net_batch=net_batch(resolution, dev),
    )


def net_batch(resolution: int, device: torch.device) -> int:
    """Rows per network call: about 8k pixel positions on a CPU (throughput is flat beyond that and small
    sets pad less), 256k on a GPU; a power of two between 1 and 256."""
    budget = 2**18 if device.type == "cuda" else 2**13
    return int(min(256, max(1, 2 ** math.floor(math.log2(max(1, budget // resolution**2))))))


# --- training ----------------------------------------------------------------------------------------


def check_training_data(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square, got {tuple(images.shape[-2:])}")
    if len(labels) != len(images) or len(images) == 0:
        raise ValueError(f"need one label per image and at least one image, got {len(images)} and {len(labels)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")


@dataclass(frozen=True)
class Batch:
    index: torch.Tensor  # (B,) training images
    noise: torch.Tensor  # (B, C, H, W)
    t: torch.Tensor  # (B,) timesteps (DDPM objectives)
    drop: torch.Tensor  # (B,) bool: replace the label by the null class
    mirror: torch.Tensor  # (B,) bool: flip horizontally (used only where flips are allowed)
    normal: torch.Tensor  # (B,) standard normal: EDM's log-normal noise levels


def draw_batch(seed: int, step: int, train: GeneratorTrainSpec, n: int, channels: int, resolution: int, device):
    """Step `step`'s random draws, from a CPU generator seeded by (seed, step): the same on any device."""
    g = torch.Generator().manual_seed(derive_seed(seed, "step", step))
    b = train.batch_size
    index = torch.randint(n, (b,), generator=g)
    noise = torch.randn((b, channels, resolution, resolution), generator=g)
    t = torch.randint(0, train.timesteps, (b,), generator=g)
    drop = torch.rand(b, generator=g) < train.label_dropout
    mirror = torch.rand(b, generator=g) < 0.5
    normal = torch.randn(b, generator=g)  # drawn last: the draws before it are those of earlier versions
    return Batch(*(v.to(device) for v in (index, noise, t, drop, mirror, normal)))


@dataclass(frozen=True)
class Progress:
    """What a `monitor` sees after every training step (the bench's quality-vs-CPU-minutes curves)."""

    step: int  # steps done
    cpu_seconds: float  # process CPU time spent training so far (the monitor's own time excluded)
    params: list  # the live (training) parameters
    ema: object  # diffusers EMAModel of `params`
    unet: nn.Module  # the network (training mode)


def train_generator(
    model: ModelSpec,
    train: GeneratorTrainSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    out_dir: Path,
    *,
    seed: int,
    flip: bool,
    device: str = "auto",
    progress: bool = True,
    monitor: Callable[[Progress], bool | None] | None = None,
) -> dict:
    """Train (resuming from `out_dir`'s checkpoint if there is one) and save the EMA model in diffusers format.
    Every random draw of step k comes from a generator seeded by (seed, k), so a resumed run ends with
    exactly the weights of an uninterrupted one. `monitor` is called after every step (its CPU time is not
    counted as training); returning True ends training there (the model of that step is saved). Returns
    provenance stats."""
    from diffusers.optimization import get_constant_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    finished = read_json(out_dir / GENERATOR_META)
    if finished is not None:  # trained earlier (the caller's done marker may not have been written)
        return finished["train_stats"]
    check_training_data(images, labels, num_classes)
    dev = resolve_device(device)
    precision = resolve_precision(train.precision, dev, key="train.precision")
    resolution, channels = images.shape[-1], images.shape[1]

    # Build. Initial weights depend only on the seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        unet = build_unet(model, resolution, channels, num_classes).to(dev).train()
    objective = make_objective(model, train)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    lr_schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=train.warmup)
    ema = EMAModel(params, decay=train.ema_decay, foreach=True)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision.name == "fp16")
    data = images.to(dev)
    targets = labels.to(dev, torch.long)

    # Resume.
    start, cpu_before = 0, 0.0
    ckpt_file = out_dir / GENERATOR_CHECKPOINT
    if ckpt_file.exists():
        state = torch.load(ckpt_file, map_location=dev, weights_only=False)
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        ema.load_state_dict(state["ema"])
        scaler.load_state_dict(state["scaler"])
        start, cpu_before = state["step"], state.get("cpu_seconds", 0.0)
        # a resumed run keeps the precision it started with
        precision = Precision(state["precision"], state.get("precision_reason", "resumed"))

    def net(x, t, y):
        with autocast(dev, precision.name):
            return unet(x, t, y).sample

    # Train. Every random draw of step k comes from (seed, k), so resuming needs no saved RNG state.
    n_params = sum(p.numel() for p in params)
    bar = tqdm(range(start, train.steps), desc="generator", disable=not progress, initial=start, total=train.steps)
    t0, recent, seen = time.perf_counter(), collections.deque(maxlen=50), 0
    steady_t0, steady_seen = None, 0  # throughput after the first step (allocation, kernel set-up)
    cpu_seconds, cpu_mark, done = cpu_before, time.process_time(), start
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # leave the caller's RNG alone
        for step in bar:
            batch = draw_batch(seed, step, train, len(data), channels, resolution, dev)
            if model.dropout:
                torch.manual_seed(derive_seed(seed, "dropout", step))  # model dropout uses the global RNG
            x0 = data[batch.index].float() / 127.5 - 1.0
            if flip:
                x0 = torch.where(batch.mirror.view(-1, 1, 1, 1), x0.flip(-1), x0)
            y = torch.where(batch.drop, num_classes, targets[batch.index])  # label dropout trains the null class
            loss = objective.loss(net, x0, batch.noise, batch.t, batch.normal, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                hint = "" if precision.name == "fp32" else ", or use train.precision: fp32"
                raise TrainingDiverged(
                    f"generator training loss is {loss_value} at step {step} (train.lr {train.lr}, precision "
                    f"{precision.name}); lower train.lr or set train.grad_clip{hint}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if train.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            ema.step(params)
            recent.append(loss_value)
            seen += train.batch_size
            if steady_t0 is None:
                steady_t0 = time.perf_counter()
            else:
                steady_seen += train.batch_size

            done = step + 1
            now = time.process_time()
            cpu_seconds, cpu_mark = cpu_seconds + now - cpu_mark, now
            if done % train.checkpoint_every == 0 and done < train.steps:
                save_checkpoint(ckpt_file, unet, optimizer, lr_schedule, ema, scaler, done, precision, cpu_seconds)
            if monitor is not None:
                stop = monitor(Progress(done, cpu_seconds, params, ema, unet))
                cpu_mark = time.process_time()
                if stop:
                    break
            if progress and (done % 10 == 0 or done == train.steps):
                bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    bar.close()
    end = time.perf_counter()

    # Save the EMA weights in diffusers format, then the meta file that marks the model complete.
    ema.copy_to(params)
    unet.eval()
    stats = {
        "steps": done,  # train.steps unless a monitor ended training early
        "resumed_from": start,
        "final_loss": sum(recent) / len(recent) if recent else None,  # mean of the last 50 steps
        "images_per_s": steady_seen / (end - steady_t0) if steady_seen else None,
        "seconds": end - t0,
        "cpu_seconds": cpu_seconds,  # process CPU time of training (all threads), resumed parts included
        **precision.stats(),
        "device": str(dev),
        "parameters": n_params,
    }
    save_model(unet, objective.scheduler, out_dir, num_classes=num_classes, model=model.model_dump(mode="json"),
               train_stats=stats, train=train.model_dump(mode="json"))  # fmt: skip
    ckpt_file.unlink(missing_ok=True)
    return stats


def save_checkpoint(path: Path, unet, optimizer, lr_schedule, ema, scaler, step, precision: Precision, cpu_seconds):
    state = {
        "unet": unet.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(),
        "ema": ema.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "precision": precision.name,
        "precision_reason": precision.reason,
        "cpu_seconds": cpu_seconds,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_model(
    unet, scheduler, out_dir: Path, *, num_classes: int, model: dict | None, train_stats: dict, **extra
) -> None:
    """A study generator directory: the UNet (with its class table of `num_classes` + null rows) and the noise
    schedule in diffusers format, then generator.json, which marks it complete. `model` is the ModelSpec it was
    built from (None for a pretrained UNet); `extra` goes into generator.json beside it."""
    for name, obj in ((UNET_DIR, unet), (SCHEDULER_DIR, scheduler)):
        with atomic_dir(out_dir / name) as tmp:
            obj.save_pretrained(tmp, **({"safe_serialization": True} if name == UNET_DIR else {}))
    size = unet.config.sample_size
    meta = {
        "num_classes": num_classes,
        "null_class": num_classes,
        "resolution": size if isinstance(size, int) else size[0],
        "channels": unet.config.in_channels,
        "model": model,
        "train_stats": train_stats,
        **extra,
    }
    atomic_write_json(out_dir / GENERATOR_META, meta)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Write a directory under a temp name, then rename it into place (replacing an older one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException as exc:
        error = as_disk_full(path, exc)  # save_pretrained reports a full disk as its writer's own error
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not exc:
            raise error from exc
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
