"""Pretrained open-set generators: diffusers models from a local directory or the Hugging Face hub, used as
they are. Two kinds:

- `class-unet`: a class-conditional `UNet2DModel` (a study generator directory, a pipeline holding one, or a
  bare UNet with its scheduler config). The generator stage copies it into the store with its class table
  re-ordered to the study's classes (`class_index`), so sampling goes through the usual `Generator`
  (condition vectors + eps) and `study.sampling.sampler.build_sample_set`.
- `text2image`: a `DiffusionPipeline` such as Stable Diffusion, prompted per class with templates ("a photo
  of a {class}"), a negative prompt, the arm's sampler / steps / guidance; outputs are fitted to the study's
  resolution and channels and written as the same sample-set artifact. Optionally the lowest-scoring
  fraction by CLIP image-text similarity is dropped per class (Wang et al. drop 20%): ceil(V / (1 - drop))
  candidates per class are drawn and the V best kept, in seed order, with the kept fraction recorded.

    path = fetch("CompVis/stable-diffusion-v1-4", revision=None, where="generators.sd.pretrained.model")
    info = prepare_pretrained(spec.pretrained, ds, out_dir, where="generators.sd")      # the generator stage
    info = build_text2image_samples(gen_dir, spec.pretrained, spec.sample, ds.class_names, 100, root, out,
                                    channels=3, resolution=32, score=score)

Offline: a local directory always works. A hub id is read from the local Hugging Face cache when
HF_HUB_OFFLINE is set (`local_files_only`), else downloaded; when neither works the error names the id and
says how to pre-download it or point to a local directory. Keys hold what changes results: a hub id with its
revision, or a local directory's content fingerprint (sha256 of every file, memoised in $STUDY_CACHE by path,
size and mtime), never its path. Needs diffusers; the CLIP filter needs transformers (`pip install
'study[text2image]'`), imported only when used. Cost: Stable Diffusion 1.x at 512 px, 25 steps with guidance,
is a GPU job (~1-2 s per image on one A100-class GPU, minutes per image on this 2-core CPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from study.grid import (
    TEXT2IMAGE_OPTIONS,
    UNET_OPTIONS,
    ClipFilterSpec,
    PretrainedSpec,
    SampleSpec,
    class_index,
)
from study.hub import PretrainedError, local_dir, offline
from study.sampling.cost import candidates_per_class, pipeline_nfe_per_image, trajectory_length
from study.sampling.sample_set import conditional_accuracy, sample_seeds, set_layout, write_sample_set
from study.store import (
    GENERATOR_META,
    PRETRAINED_META,
    SCHEDULER_DIR,
    TRAIN_STATS,
    UNET_DIR,
    atomic_write_json,
    read_json,
)

# --- where a model lives -------------------------------------------------------------------------------


def fetch(
    model: str, revision: str | None, where: str, pipeline: bool = False, patterns: Sequence[str] | None = None
) -> Path:
    """A local directory holding the model: `model` itself, or the hub snapshot (cache only when offline)."""
    path = local_dir(model, where)
    if path is not None:
        return path
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    only_local = offline()
    try:
        if pipeline:
            from diffusers import DiffusionPipeline

            # downloads only the pipeline's components (not every weight variant in the repository)
            got = DiffusionPipeline.download(model, revision=revision, local_files_only=only_local)
        else:
            from huggingface_hub import snapshot_download

            got = snapshot_download(model, revision=revision, local_files_only=only_local, allow_patterns=patterns)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise PretrainedError(_not_found(model, revision, where, only_local, exc)) from None
    return Path(got)


def _not_found(model: str, revision: str | None, where: str, only_local: bool, exc: Exception) -> str:
    from huggingface_hub import constants

    at = f" at revision {revision!r}" if revision else ""
    how = (
        "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        if only_local
        else f"it could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    )
    rev = f" --revision {revision}" if revision else ""
    return (
        f"{where}: {model!r} is not a local directory ({Path(model).resolve()} does not exist), and as a Hugging "
        f"Face hub id{at} {how}. Pre-download it on a machine with network (`hf download {model}{rev}`, into "
        f"{constants.HF_HUB_CACHE} or the HF_HOME you run with) and run with HF_HUB_OFFLINE=1, or save it to a "
        f"directory (`DiffusionPipeline.from_pretrained(...).save_pretrained(DIR)`) and set {where} to DIR."
    )


# --- what a model is -------------------------------------------------------------------------------------


def detect_kind(path: Path, where: str) -> str:
    """class-unet or text2image, from the files diffusers saved (or a study generator's generator.json)."""
    if (path / GENERATOR_META).exists():
        return "class-unet"
    index = read_json(path / "model_index.json", PretrainedError)
    if index is not None:
        unet = index.get("unet", [None, None])[1]
        if unet == "UNet2DModel" and "text_encoder" not in index:
            return "class-unet"
        if "text_encoder" in index or "tokenizer" in index:
            return "text2image"
        raise PretrainedError(
            f"{where}: {path} is a {index.get('_class_name')} pipeline without a text encoder or a UNet2DModel; "
            f"expected a class-conditional UNet2DModel or a text-to-image pipeline"
        )
    config = read_json(path / "config.json", PretrainedError)
    if config is not None and config.get("_class_name") == "UNet2DModel":
        return "class-unet"
    raise PretrainedError(
        f"{where}: {path} is not a diffusers model directory: expected model_index.json (a pipeline), config.json "
        f"of a UNet2DModel (with scheduler_config.json), or a study generator (generator.json)"
    )


def _unet_parts(path: Path, where: str) -> tuple[Path, Path, dict | None]:
    """The UNet directory, the scheduler config directory and a study generator's meta (None otherwise)."""
    meta = read_json(path / GENERATOR_META, PretrainedError)
    if meta is not None or (path / "model_index.json").exists():  # a study generator is laid out as a pipeline
        unet, scheduler = path / UNET_DIR, path / SCHEDULER_DIR
    else:
        unet, scheduler = path, path
    for part, what in ((unet / "config.json", "UNet config"), (scheduler / "scheduler_config.json", "scheduler")):
        if not part.exists():
            raise PretrainedError(
                f"{where}: {part} ({what}) not found; a class-unet model needs a UNet and its scheduler"
            )
    return unet, scheduler, meta


# --- the generator stage ---------------------------------------------------------------------------------


def prepare_pretrained(spec: PretrainedSpec, ds, out: Path, *, where: str) -> dict:
    """Resolve the model (download it when online) and record it; a class-conditional UNet is re-saved as a
    study generator whose class table rows are the study's classes. Writes pretrained.json and train_stats.json."""
    start = time.perf_counter()
    model_where = f"{where}.pretrained.model"
    # A hub repository holding a bare UNet (no model_index.json) needs `kind: class-unet`.
    path = fetch(spec.model, spec.revision, model_where, pipeline=spec.kind != "class-unet")
    kind = detect_kind(path, model_where)
    if spec.kind != "auto" and spec.kind != kind:
        raise PretrainedError(f"{where}.pretrained.kind: {spec.kind!r} asked for, but {path} holds a {kind} model")
    foreign = TEXT2IMAGE_OPTIONS if kind == "class-unet" else UNET_OPTIONS
    options = sorted(k for k in spec.model_fields_set if k in foreign)
    if options:
        raise PretrainedError(f"{where}.pretrained: {options} do not apply to {path}, a {kind} model")
    info = {"model": spec.model, "revision": spec.revision, "kind": kind, "path": str(path), "snapshot": path.name}
    seen = _seen_by(path)
    if kind == "class-unet":
        info |= save_class_unet(path, spec, ds, out, where)
    else:
        check_class_names(spec, ds.class_names, where)
    atomic_write_json(out / PRETRAINED_META, info)
    stats = {
        "train_on": "pretrained",
        "train_images": seen.get("train_images"),
        "train_data": f"pretrained:{spec.model}" + (f"@{spec.revision}" if spec.revision else "")
        + (f" ({seen['train_data']})" if seen.get("train_data") else ""),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    atomic_write_json(out / TRAIN_STATS, stats)
    return stats


def _seen_by(path: Path) -> dict:
    """What a study-trained generator saw (its artifact's train_stats.json); unknown for other models."""
    return read_json(path / TRAIN_STATS, PretrainedError) or {}


def check_class_names(spec: PretrainedSpec, class_names: Sequence[str], where: str) -> None:
    for ref in spec.class_names:
        class_index(ref, class_names, f"{where}.pretrained.class_names: class", PretrainedError)


def class_rows(spec: PretrainedSpec, rows: int, null: int | None, class_names: Sequence[str], where: str) -> list[int]:
    """The checkpoint's class-table row for each study class: `class_index`, or the identity when the counts match."""
    n_classes = len(class_names)
    if spec.class_index is None:
        theirs = rows - (null is not None)
        if theirs != n_classes:
            raise PretrainedError(
                f"{where}.pretrained.class_index: the checkpoint has {theirs} classes"
                f"{' besides its null class' if null is not None else ''}, the dataset {n_classes}; map each study class to "
                f"a row of its class table ({{our class: index}})"
            )
        return list(range(n_classes))
    index: dict[int, int] = {}
    for ref, row in spec.class_index.items():
        c = class_index(ref, class_names, f"{where}.pretrained.class_index: study class", PretrainedError)
        if row >= rows or row == null:
            raise PretrainedError(
                f"{where}.pretrained.class_index.{ref}: row {row} is {'the null class' if row == null else 'out of range'}"
                f" (the class table has rows 0..{rows - 1})"
            )
        index[c] = row
    missing = [class_names[c] for c in range(n_classes) if c not in index]
    if missing:
        raise PretrainedError(f"{where}.pretrained.class_index: study classes {missing} are not mapped to a row")
    return [index[c] for c in range(n_classes)]


def save_class_unet(path: Path, spec: PretrainedSpec, ds, out: Path, where: str) -> dict:
    """Re-save a class-conditional UNet2DModel as a study generator: rows of its class table in the study's class
    order plus a null row (its own null class, else the mean class row, usable only without guidance)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from torch import nn

    from study.models.generator import check_conditioning, save_model

    model_where = f"{where}.pretrained.model"
    unet_dir, scheduler_dir, meta = _unet_parts(path, model_where)
    unet = UNet2DModel.from_pretrained(unet_dir)
    table = getattr(unet, "class_embedding", None)
    if not isinstance(table, nn.Embedding):
        raise PretrainedError(
            f"{model_where}: the UNet at {unet_dir} has no class table (class_embed_type="
            f"{unet.config.class_embed_type!r}, num_class_embeds={unet.config.num_class_embeds}); only UNet2DModels "
            f"with `num_class_embeds` are class-conditional in the way study samples them"
        )
    null = spec.null_class if spec.null_class is not None else (meta or {}).get("null_class")
    if null is not None and null >= table.num_embeddings:
        raise PretrainedError(
            f"{where}.pretrained.null_class: {null} is outside the class table (0..{table.num_embeddings - 1})"
        )
    rows = class_rows(spec, table.num_embeddings, null, ds.class_names, where)
    weight = table.weight.detach()
    null_row = weight[null] if null is not None else weight[rows].mean(0)
    new_table = torch.cat([weight[rows], null_row[None]])

    config = dict(unet.config)
    size = config["sample_size"]
    resolution = size if isinstance(size, int) else size[0]
    if not isinstance(size, int) and size[0] != size[1]:
        raise PretrainedError(f"{model_where}: the UNet's sample_size {size} is not square")
    channels = config["in_channels"]
    if channels not in (1, 3) or config["out_channels"] != channels:
        raise PretrainedError(
            f"{model_where}: expected a pixel-space UNet with 1 or 3 channels in and out, got {channels}"
        )
    n_classes = len(ds.class_names)
    state = unet.state_dict()
    state["class_embedding.weight"] = new_table
    remapped = UNet2DModel.from_config({**config, "num_class_embeds": n_classes + 1})
    remapped.load_state_dict(state)
    remapped.eval()
    check_conditioning(remapped, resolution, channels, n_classes)
    scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(scheduler_dir))
    info = {"class_rows": rows, "has_null": null is not None, "source_null_class": null}
    save_model(
        remapped,
        scheduler,
        out,
        num_classes=n_classes,
        model=None,
        train_stats={"pretrained": spec.model},
        pretrained=info,
    )
    return info | {"resolution": resolution, "channels": channels}


def check_guidance(gen_dir: Path, sample: SampleSpec, where: str) -> None:
    """A class-unet without a null class cannot do classifier-free guidance (or unconditional sampling)."""
    meta = read_json(Path(gen_dir) / PRETRAINED_META, PretrainedError) or {}
    if meta.get("kind") == "class-unet" and not meta.get("has_null") and sample.guidance != 1.0:
        raise PretrainedError(
            f"{where}.sample.guidance: {sample.guidance} needs a null class, and {meta.get('model')!r} has none; "
            f"set sample.guidance: 1 or name its null class in pretrained.null_class"
        )


def pretrained_kind(gen_dir: Path) -> str | None:
    return (read_json(Path(gen_dir) / PRETRAINED_META, PretrainedError) or {}).get("kind")


# --- text-to-image sample sets -------------------------------------------------------------------------------


def prompts_for(spec: PretrainedSpec, class_names: Sequence[str], candidates: int) -> list[str]:
    """Class-major prompts: image j of class c uses template j mod len(templates) with the class text filled in."""
    text = {
        class_index(ref, class_names, "pretrained.class_names: class", PretrainedError): t
        for ref, t in spec.class_names.items()
    }
    templates = spec.templates
    return [
        templates[j % len(templates)].replace("{class}", text.get(c, name))
        for c, name in enumerate(class_names)
        for j in range(candidates)
    ]


def keep_top(scores: np.ndarray, volume: int) -> np.ndarray:
    """Indices of the `volume` highest scores, in their original (seed) order; ties go to the earlier index."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return np.sort(order[:volume])


_SCHEDULERS = {  # the arm's sample.sampler on a pipeline: diffusers scheduler class and options
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": True}),  # EDM's noise levels (Karras et al. 2022)
    "ddpm": ("DDPMScheduler", {}),
}


def load_pipeline(path: Path, sample: SampleSpec, device):
    import diffusers
    import torch
    from diffusers import DiffusionPipeline

    from study.models.device import resolve_precision

    precision = resolve_precision("auto", device).name
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    half = {} if dtype == torch.float32 else {"torch_dtype": dtype}  # (renamed `dtype` in newer diffusers)
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, **half)
    name, options = _SCHEDULERS[sample.sampler]
    pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), precision


def build_text2image_samples(
    gen_dir: Path,
    spec: PretrainedSpec,
    sample: SampleSpec,
    class_names: Sequence[str],
    volume_per_class: int,
    seed_root: str,
    out_dir: Path,
    *,
    channels: int,
    resolution: int,
    score: Callable | None = None,
    device: str = "auto",
    progress: bool = False,
    where: str = "generators.<arm>",
) -> dict:
    """Sample `volume_per_class` prompted images of every class into `out_dir` (a sample set,
    study.sampling.sample_set: images uint8 at the study's size, class-major), keeping the candidates the CLIP
    filter scores best when there is one."""
    import torch
    from tqdm.auto import tqdm

    from study.data.datasets import fit_images
    from study.models.device import resolve_device
    from study.models.generator import net_batch

    if sample.strategy != "conditional":
        raise PretrainedError(
            f"{where}.sample.strategy: text-to-image pipelines are sampled with class prompts (conditional), "
            f"not {sample.strategy!r}"
        )
    meta = read_json(Path(gen_dir) / PRETRAINED_META, PretrainedError)
    if meta is None or meta.get("kind") != "text2image":
        raise PretrainedError(f"{gen_dir}: no text-to-image model recorded in {PRETRAINED_META}")
    dev = resolve_device(device)
    pipe, precision = load_pipeline(Path(meta["path"]), sample, dev)
    clip = clip_scorer(spec.filter, dev, f"{where}.pretrained.filter") if spec.filter else None
    n_classes = len(class_names)
    n = candidates_per_class(volume_per_class, spec.filter.drop if spec.filter else None)
    prompts = prompts_for(spec, class_names, n)
    seeds = sample_seeds(seed_root, n_classes, n)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer  # UNet pipelines (SD 1/2, SDXL) or DiT ones (SD3)
    size = spec.size or denoiser.config.sample_size * pipe.vae_scale_factor
    batch = net_batch(size // pipe.vae_scale_factor, dev)  # a fixed batch shape: images never depend on batching

    # Generate every candidate, scoring it at full size and keeping it at the study's size.
    images = torch.empty((n_classes * n, channels, resolution, resolution), dtype=torch.uint8)
    scores = np.zeros(n_classes * n, dtype=np.float32)
    flagged, start = 0, time.perf_counter()
    for lo in tqdm(range(0, n_classes * n, batch), desc="text2image", disable=not progress):
        part = list(range(lo, min(lo + batch, n_classes * n)))
        pad = part + [part[0]] * (batch - len(part))  # padding rows repeat the first; their outputs are dropped
        result = pipe(
            [prompts[i] for i in pad],
            negative_prompt=[spec.negative_prompt] * batch if spec.negative_prompt else None,
            num_inference_steps=sample.steps,
            guidance_scale=sample.guidance,
            height=size,
            width=size,
            generator=[torch.Generator().manual_seed(seeds[i]) for i in pad],
            output_type="pt",
        )
        full = (result.images[: len(part)].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        flagged += sum(bool(f) for f in (getattr(result, "nsfw_content_detected", None) or [])[: len(part)])
        if clip is not None:
            scores[part] = clip(full, [prompts[i] for i in part])
        images[part] = fit_images(full, channels, resolution)
    seconds = time.perf_counter() - start

    # Keep the best `volume_per_class` candidates of every class, in seed order.
    per_class = scores.reshape(n_classes, n)
    kept = np.concatenate([c * n + keep_top(per_class[c], volume_per_class) for c in range(n_classes)])
    kept_images = images[torch.from_numpy(kept)].contiguous()
    group, rank = set_layout(np.full(n_classes, volume_per_class))
    labels = torch.as_tensor(group)
    candidate_kept = np.isin(np.arange(n_classes * n), kept).reshape(n_classes, n)
    trajectory = trajectory_length(sample.sampler, sample.steps, dict(pipe.scheduler.config), None)
    info = {
        "candidates_per_class": n,
        "kept_fraction": volume_per_class / n,
        "nfe_per_image": pipeline_nfe_per_image(sample, trajectory) * n / volume_per_class,
        "seconds": seconds,
        "images_per_s": n_classes * n / seconds if seconds > 0 else None,
        "generation_size": size,
        "nsfw_flagged": flagged,
        "prompts": [prompts[c * n] for c in range(n_classes)],
    }
    if clip is not None:
        info |= {
            "clip_drop": spec.filter.drop,
            "clip_score_kept_mean": float(per_class[candidate_kept].mean()),
            "clip_score_dropped_mean": float(per_class[~candidate_kept].mean()) if (~candidate_kept).any() else None,
        }
    if score is not None:
        info |= conditional_accuracy(score(kept_images), labels)
    about = {
        "sample": sample.model_dump(mode="json"),
        "pretrained": meta,
        "generator_dir": Path(gen_dir).name,
        "seed_root": seed_root,
        "precision": precision,
        "device": str(dev),
    }
    candidates = {  # (classes, candidates); scores are zeros without a filter
        "candidate_scores": torch.from_numpy(per_class.copy()),
        "candidate_kept": torch.from_numpy(candidate_kept),
    }
    return write_sample_set(
        out_dir, kept_images, group=group, rank=rank, seeds=[seeds[i] for i in kept], labels=labels,
        num_classes=n_classes, volume_per_class=volume_per_class, meta=about, diagnostics=info, tensors=candidates,
    )  # fmt: skip


def clip_scorer(spec: ClipFilterSpec, device, where: str) -> Callable:
    """(uint8 images (n, 3, H, W), texts) -> cosine similarity of CLIP image and text embeddings, one per pair."""
    import torch

    try:
        from transformers import AutoProcessor, CLIPModel
    except ImportError as exc:
        raise PretrainedError(f"{where}: the CLIP filter needs transformers: pip install 'study[text2image]'") from exc
    path = fetch(spec.model, spec.revision, f"{where}.model", patterns=["*.json", "*.txt", "*.safetensors"])
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PretrainedError(f"{where}.model: {path} is not a transformers CLIP model ({exc})") from None

    @torch.no_grad()
    def score(images, texts: Sequence[str]) -> np.ndarray:
        pixels = [x.permute(1, 2, 0).numpy() for x in images]
        inputs = processor(text=list(texts), images=pixels, return_tensors="pt", padding=True, truncation=True)
        out = model(**{k: v.to(device) for k, v in inputs.items()})
        image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return (image * text).sum(-1).cpu().numpy()

    return score
