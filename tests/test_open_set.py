"""Open-set generators: trained on the whole pool or another dataset (never on test/val images), or pretrained
diffusers models (a class-conditional UNet, a text-to-image pipeline with class prompts and a CLIP filter).
Every pretrained model here is a tiny randomly initialised one built and saved in a temp dir: nothing is
downloaded, and hub ids are looked up with HF_HUB_OFFLINE semantics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from study.data.datasets import fit_images, load_dataset
from study.data.sources import OpenSetError, check_train_only, generator_data, map_classes
from study.grid import GridError, OtherDataset, expand, load_grid, validate_grid
from study.hub import PretrainedError, identity, local_dir
from study.runner import cli as study_run
from study.runner import stages
from study.runner.plan import describe, make_plan
from study.sampling.cost import candidates_per_class
from study.sampling.pretrained import check_guidance, class_rows, fetch, keep_top
from study.store import PRETRAINED_META, PREVIEW, SAMPLES, SAMPLES_META, TRAIN_STATS, Store

DIGITS = [str(i) for i in range(10)]


# --- tiny local models ----------------------------------------------------------------------------------


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte-level BPE alphabet: every byte as a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def tiny_tokenizer(path: Path):
    """A CLIP tokenizer over the 256 byte characters and a few merges, written as the classic vocab.json and
    merges.txt (readable by transformers 4 and 5) without any download."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = [("p", "h"), ("o", "t"), ("c", "l"), ("cl", "a")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return CLIPTokenizer.from_pretrained(path, model_max_length=77)


def _text_config(tokenizer) -> dict:
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    return dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2,
                num_hidden_layers=1, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)  # fmt: skip


def save_text2image(path: Path) -> Path:
    """A Stable-Diffusion-shaped pipeline (UNet2DConditionModel, CLIP text encoder, AutoencoderKL) at 16 px."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(path.with_name(path.name + "-tokenizer"))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, clip_sample=False
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config(tokenizer))), tokenizer=tokenizer,
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(path)
    return path


def save_clip(path: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(1)
    tokenizer = tiny_tokenizer(path.with_name(path.name + "-tokenizer"))
    vision = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=16,
                  patch_size=4)  # fmt: skip
    CLIPModel(CLIPConfig(text_config=_text_config(tokenizer), vision_config=vision, projection_dim=8)).save_pretrained(
        path
    )
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(path)
    return path


def save_class_unet(path: Path, rows: int = 12) -> Path:
    """A bare class-conditional UNet2DModel (16 px RGB, `rows` class rows) with its scheduler config beside it."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(2)
    unet = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=rows, add_attention=False,
    )  # fmt: skip
    unet.save_pretrained(path)
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers", reason="text-to-image models need transformers: pip install 'study[test]'")
    root = tmp_path_factory.mktemp("models")
    return {
        "sd": save_text2image(root / "tiny-sd"),
        "clip": save_clip(root / "tiny-clip"),
        "unet": save_class_unet(root / "tiny-unet"),
    }


# --- grids and datasets -----------------------------------------------------------------------------------


def grid_of(generators: dict, dataset: dict | None = None, **top) -> dict:
    return {
        "name": "open",
        "dataset": dataset or {"name": "digits"},
        "real": {"base": [5, 10], "extra": [5]},
        "synthetic": {"volume": [2]},
        "generators": generators,
        "classifier": {"arch": "study_cnn", "width": 8, "steps": 10, "batch_size": 16},
        "seeds": [0, 1],
        "device": "cpu",
        **top,
    }


TINY_TRAIN = {"model": {"preset": "tiny"}, "train": {"steps": 2, "batch_size": 8, "warmup": 1}}


def tagged_npz(path: Path, n: dict[str, int], classes=("a", "b"), mark: int = 0) -> Path:
    """8x8 grey images whose pixels spell (mark, split, row): every image of every split is distinct."""
    arrays = {}
    for s, (split, count) in enumerate(n.items()):
        images = np.zeros((count, 8, 8), np.uint8)
        images[:, 0, 0], images[:, 0, 1] = mark, s
        images[:, 0, 2], images[:, 0, 3] = np.arange(count) // 256, np.arange(count) % 256
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = np.arange(count) % len(classes)
    np.savez(path, class_names=np.array(classes), **arrays)
    return path


def tag(image: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(v) for v in image[0, 0, :4])


def tags(images: torch.Tensor) -> set[tuple[int, ...]]:
    return {tag(x) for x in images}


def capture_training(monkeypatch) -> list:
    """Replace generator training by a recorder of what it was given."""
    seen = []

    def fake_train(model, train, images, labels, num_classes, out_dir, **kwargs):
        seen.append((images.clone(), labels.clone(), num_classes))
        return {"steps": train.steps}

    monkeypatch.setattr("study.models.generator.train_generator", fake_train)
    return seen


# --- the grid syntax --------------------------------------------------------------------------------------


def test_open_arms_parse_and_are_open():
    grid = validate_grid(
        grid_of(
            {
                "closed": {"train_on": "base"},
                "pool": {"train_on": "pool"},
                "other": {"train_on": {"dataset": {"name": "digits"}, "classes": {"0": "1", 1: 0}}},
                "short": {"pretrained": "some-org/some-model"},
                "sd": {
                    "pretrained": {
                        "model": "org/sd",
                        "revision": "abc",
                        "prompt": ["a {class}", "an {class} photo"],
                        "negative_prompt": "blurry",
                        "filter": {"model": "org/clip", "drop": 0.2},
                    }
                },
            }
        )
    )
    kinds = {arm: gen.kind for arm, gen in grid.generators.items()}
    assert kinds == {"closed": "closed", "pool": "open", "other": "open", "short": "open", "sd": "open"}
    assert grid.generators["short"].pretrained.model == "some-org/some-model"
    assert grid.generators["sd"].pretrained.templates == ["a {class}", "an {class} photo"]
    assert isinstance(grid.generators["other"].train_on, OtherDataset)
    assert {c.arm_kind for c in expand(grid) if c.arm != "closed" and c.volume_per_class} == {"open"}


@pytest.mark.parametrize(
    ("arm", "expected"),
    [
        ({"pretrained": "x/y", "train_on": "pool"}, "generators.a: give `train_on` (a generator to train) or `pretrained`"),
        ({"pretrained": {"model": "x/y", "prompt": "a photo"}}, "template 'a photo' has no {class} placeholder"),
        ({"pretrained": {"model": "x/y", "kind": "class-unet", "size": 64}}, "['size'] do not apply to kind 'class-unet'"),
        ({"pretrained": {"model": "x/y", "class_index": {"0": 1}, "negative_prompt": "n"}}, "a model is one kind"),
        ({"pretrained": {"model": "x/y", "filter": {"model": "c", "drop": 1.0}}}, "pretrained.filter.drop: Input should be less than 1"),
        ({"pretrained": {"model": "x/y", "promt": "a {class}"}}, "generators.a.pretrained.promt: unknown key"),
        ({"train_on": {"dataset": {"name": "digits"}, "classes": {}}}, "generators.a.train_on.classes: Dictionary should have at least 1"),
        ({"train_on": {"dataset": {"name": "nope"}, "classes": {"0": "0"}}}, "generators.a.train_on.dataset"),
        ({"train_on": "everything"}, "generators.a.train_on: Input should be 'base' or 'pool'"),
    ],
)  # fmt: skip
def test_bad_open_arms_name_the_key(arm, expected):
    with pytest.raises(GridError) as err:
        validate_grid(grid_of({"a": arm}), "g.yaml")
    assert expected in str(err.value)


# --- what an open-set generator sees --------------------------------------------------------------------------


def test_pool_generator_never_sees_test_or_val(tmp_path, monkeypatch):
    npz = tagged_npz(tmp_path / "d.npz", {"train": 40, "val": 12, "test": 16})
    other = tagged_npz(tmp_path / "o.npz", {"train": 30, "val": 6, "test": 9}, classes=("x", "y", "z"), mark=7)
    grid = validate_grid(
        grid_of(
            {
                "closed": {**TINY_TRAIN, "train_on": "base"},
                "pool": {**TINY_TRAIN, "train_on": "pool"},
                "other": {
                    **TINY_TRAIN,
                    "train_on": {"dataset": {"name": "npz", "path": str(other)}, "classes": {"x": "b", "z": "a"}},
                },
            },
            dataset={"name": "npz", "path": str(npz)},
        )
    )
    plan = make_plan(grid, expand(grid))
    gens = [n for n in plan.by_stage("generator")]
    # closed: one per (seed, base); pool and other dataset: one per seed, shared by both base sizes
    assert sorted(n.art.slug for n in gens) == sorted(
        [f"gen-closed-base{b}-s{s}" for b in (5, 10) for s in (0, 1)]
        + [f"gen-pool-s{s}" for s in (0, 1)]
        + [f"gen-on-npz-s{s}" for s in (0, 1)]
    )
    seen = capture_training(monkeypatch)
    ctx = stages.Context(grid, str(tmp_path / "store"), "cpu")
    ds = ctx.dataset()
    by_slug = {n.art.slug: n for n in gens}
    for slug in ("gen-pool-s0", "gen-closed-base10-s0", "gen-on-npz-s0"):
        out = tmp_path / slug
        out.mkdir()
        stages.build_generator(by_slug[slug], ctx, out)
        assert json.loads((out / TRAIN_STATS).read_text())["train_images"] == len(seen[-1][0])
    (pool, pool_y, _), (base, _, _), (theirs, their_y, k) = seen
    held_out = tags(ds.test.images) | tags(ds.val.images)
    assert tags(pool) == tags(ds.train.images) and len(pool) == 40 and not tags(pool) & held_out
    assert torch.equal(pool_y, ds.train.labels)
    assert len(base) == 20 and tags(base) <= tags(ds.train.images)
    # another dataset: its training split only, mapped classes only (y is unused), relabelled x -> b, z -> a
    other_ds = load_dataset(grid.generators["other"].train_on.dataset)
    assert tags(theirs) <= tags(other_ds.train.images) and k == 2
    assert not tags(theirs) & (tags(other_ds.test.images) | tags(other_ds.val.images))
    their_label = dict(zip(map(tag, other_ds.train.images), other_ds.train.labels.tolist(), strict=True))
    assert [{0: 1, 2: 0}[their_label[tag(x)]] for x in theirs] == their_y.tolist()
    stats = json.loads((tmp_path / "gen-pool-s0" / TRAIN_STATS).read_text())
    assert stats["train_on"] == "pool" and stats["train_data"] == "npz:train[40]" and stats["eval_duplicates"] == 0


def test_training_data_must_come_from_train_splits(tmp_path):
    ds = load_dataset(validate_grid(grid_of({})).dataset)
    data = generator_data(ds, "pool", seed=0, base_per_class=None)
    assert len(data) == len(ds.train)
    leaked = type(data)(
        data.images, data.labels, (type(data.sources[0])("digits", ds.key, "test", np.arange(5)),), "pool"
    )
    with pytest.raises(RuntimeError, match=r"non-training splits \['digits:test\[5\]'\]"):
        check_train_only(leaked)


def test_class_mapping_errors_name_the_classes():
    theirs, ours = ["cat", "dog", "car"], ["animal", "vehicle"]
    assert map_classes(theirs, ours, {"cat": "animal", 1: "animal", "car": 1}, "other").tolist() == [0, 0, 1]
    with pytest.raises(OpenSetError, match=r"no other class maps onto the study classes \['vehicle'\]"):
        map_classes(theirs, ours, {"cat": "animal", "dog": "animal"}, "other")
    with pytest.raises(OpenSetError, match=r"other class 'truck' does not exist"):
        map_classes(theirs, ours, {"truck": "vehicle", "cat": "animal"}, "other")
    with pytest.raises(OpenSetError, match=r"study class 'plant' does not exist"):
        map_classes(theirs, ours, {"cat": "plant"}, "other")
    with pytest.raises(OpenSetError, match=r"index 3 is out of range \(0..2\)"):
        map_classes(theirs, ours, {3: "vehicle"}, "other")
    with pytest.raises(OpenSetError, match="'cat' is mapped twice"):
        map_classes(theirs, ours, {"cat": "animal", 0: "vehicle"}, "other")


def test_unmapped_classes_stop_the_run_up_front(tmp_path, capsys):
    other = tagged_npz(tmp_path / "o.npz", {"train": 30, "test": 9}, classes=("x", "y", "z"))
    arm = {**TINY_TRAIN, "train_on": {"dataset": {"name": "npz", "path": str(other)}, "classes": {"x": "3"}}}
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid_of({"other": arm})))
    assert study_run.main([str(path), "--results", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "generators.other.train_on.classes: no npz class maps onto the study classes ['0', '1', '2', '4'" in err
    assert not (tmp_path / "r" / "store" / "generator").exists()  # nothing was computed


def test_fit_images_converts_channels_and_size():
    rgb = torch.zeros(2, 3, 16, 12, dtype=torch.uint8)
    rgb[:, 0] = 200  # pure red
    grey = fit_images(rgb, 1, 8)
    assert grey.shape == (2, 1, 8, 8) and grey.dtype == torch.uint8 and int(grey[0, 0, 0, 0]) == round(0.299 * 200)
    back = fit_images(grey, 3, 8)
    assert back.shape == (2, 3, 8, 8) and torch.equal(back[:, 0], back[:, 2])
    assert fit_images(back, 3, 8) is back  # already the study's images


# --- pretrained models: where they are and how they are keyed -----------------------------------------------


def test_missing_local_path_and_offline_hub_id_name_them(tmp_path, monkeypatch, capsys):
    with pytest.raises(PretrainedError, match=r"x\.model: local path './no/such/dir' does not exist"):
        local_dir("./no/such/dir", "x.model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedError) as err:
        fetch("study-tests/no-such-model", "v1", "generators.sd.pretrained.model", pipeline=True)
    text = str(err.value)
    for part in ("generators.sd.pretrained.model", "'study-tests/no-such-model'", "at revision 'v1'",
                 "HF_HUB_OFFLINE is set", "hf download study-tests/no-such-model --revision v1", "local"):  # fmt: skip
        assert part in text
    # through the runner: both are bad input (exit 2), found before anything is computed
    for model, expected in (
        (str(tmp_path / "missing"), "does not exist"),
        ("study-tests/no-such-model", "hf download"),
    ):
        path = tmp_path / "g.yaml"
        path.write_text(json.dumps(grid_of({"sd": {"pretrained": model}})))
        assert study_run.main([str(path), "--results", str(tmp_path / "r"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "generators.sd.pretrained.model" in err and expected in err


def test_pretrained_keys_follow_content_and_revision(tmp_path, models):
    copy = shutil.copytree(models["unet"], tmp_path / "moved")
    assert identity(str(copy), None, "m")["fingerprint"] == identity(str(models["unet"]), None, "m")["fingerprint"]
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "dropout": 0.5}))
    assert identity(str(copy), None, "m") != identity(str(models["unet"]), None, "m")
    assert identity("org/model", "a1", "m") == {"hub": "org/model", "revision": "a1"}
    grid = validate_grid(grid_of({"sd": {"pretrained": str(models["sd"])}, "sd2": {"pretrained": str(models["sd"])}}))
    plan = make_plan(grid, expand(grid))
    (gen,) = plan.by_stage("generator")  # one model for both arms, every seed and base
    assert gen.art.slug == "gen-pretrained-tiny-sd" and "seed" not in gen.art.config
    samples = plan.by_stage("samples")
    assert sorted(n.art.slug for n in samples) == ["samples-conditional-pretrained-tiny-sd-v2-s0",
                                                   "samples-conditional-pretrained-tiny-sd-v2-s1"]  # fmt: skip
    assert "generator training 0 images" in describe(plan, Store(tmp_path / "s"))


# --- pretrained models: sampling ------------------------------------------------------------------------------


def test_text2image_and_class_unet_arms_end_to_end(tmp_path, models):
    from safetensors.torch import load_file

    rows = {str(c): 11 - c for c in range(10)}  # digit c uses row 11 - c of the checkpoint's table; row 0 is null
    arms = {
        "sd": {
            "pretrained": {"model": str(models["sd"]), "prompt": ["a photo of the digit {class}", "the number {class}"],
                           "negative_prompt": "blurry", "class_names": {"1": "one"},
                           "filter": {"model": str(models["clip"]), "drop": 0.5}},
            "sample": {"sampler": "ddim", "steps": 2, "guidance": 3.0},
        },
        "unet": {
            "pretrained": {"model": str(models["unet"]), "class_index": rows, "null_class": 0},
            "sample": {"sampler": "dpmpp", "steps": 2, "guidance": 2.0},
        },
    }  # fmt: skip
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid_of(arms)))
    results = tmp_path / "r"
    assert study_run.main([str(path), "--results", str(results), "--quiet"]) == 0
    df = pd.read_csv(results / "open" / "cells.csv")
    synthetic = df[df["arm"].isin(["sd", "unet"])]
    assert len(synthetic) == 8 and set(synthetic["status"]) == {"done"} and set(synthetic["arm_kind"]) == {"open"}
    assert synthetic["gen_train_images"].isna().all()
    assert set(synthetic["gen_train_data"]) == {f"pretrained:{models['sd']}", f"pretrained:{models['unet']}"}
    assert synthetic["cond_acc"].notna().all()

    store = results / "store"
    for seed in (0, 1):
        (sd,) = store.glob(f"samples/samples-conditional-pretrained-tiny-sd-v2-s{seed}__*")
        meta = json.loads((sd / SAMPLES_META).read_text())
        d = meta["diagnostics"]
        assert (d["n"], d["volume_per_class"], d["candidates_per_class"], d["kept_fraction"]) == (20, 2, 4, 0.5)
        assert d["prompts"][:2] == ["a photo of the digit 0", "a photo of the digit one"]
        assert (sd / PREVIEW).exists() and meta["pretrained"]["kind"] == "text2image"
        data = load_file(str(sd / SAMPLES))
        assert data["images"].dtype == torch.uint8 and data["images"].shape == (20, 1, 8, 8)  # digits: 1 x 8 x 8
        assert data["labels"].tolist() == [c for c in range(10) for _ in range(2)]
        kept, scores = data["candidate_kept"], data["candidate_scores"]
        assert kept.sum(1).tolist() == [2] * 10  # the stated fraction of every class
        assert all(scores[c][kept[c]].min() >= scores[c][~kept[c]].max() for c in range(10))

    # the class-conditional UNet went through the Generator interface with its table re-ordered
    from diffusers import UNet2DModel

    from study.models.generator import load_generator

    (gen_dir,) = store.glob("generator/gen-pretrained-tiny-unet__*")
    gen = load_generator(gen_dir, device="cpu")
    source = UNet2DModel.from_pretrained(models["unet"]).class_embedding.weight.detach()
    assert torch.equal(gen.table, source[[11 - c for c in range(10)] + [0]])
    assert (gen.resolution, gen.channels) == (16, 3)
    (unet_samples,) = store.glob("samples/samples-conditional-pretrained-tiny-unet-v2-s0__*")
    images = load_file(str(unet_samples / SAMPLES))["images"]
    assert images.shape == (20, 1, 8, 8)  # fitted from 16 px RGB to the study's 8 px grey


def test_clip_filter_keeps_the_best_in_seed_order(tmp_path, models):
    from safetensors.torch import load_file

    from study.grid import PretrainedSpec, SampleSpec
    from study.sampling.pretrained import build_text2image_samples, prepare_pretrained
    from study.sampling.sample_set import sample_seeds

    ds = load_dataset(validate_grid(grid_of({})).dataset)
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    prepare_pretrained(PretrainedSpec(model=str(models["sd"])), ds, gen_dir, where="generators.sd")
    sample = SampleSpec(sampler="dpmpp", steps=2, guidance=2.0)
    outs = {}
    for name, drop in (("plain", None), ("filtered", 0.25)):
        clip = {"filter": {"model": str(models["clip"]), "drop": drop}} if drop else {}
        spec = PretrainedSpec.model_validate({"model": str(models["sd"]), **clip})
        out = outs[name] = tmp_path / name
        out.mkdir()
        info = build_text2image_samples(
            gen_dir, spec, sample, DIGITS[:3], 3, "root", out, channels=1, resolution=8, device="cpu"
        )
    assert (info["candidates_per_class"], info["kept_fraction"]) == (4, 0.75)
    plain, filtered = (load_file(str(outs[n] / SAMPLES)) for n in ("plain", "filtered"))
    seeds = np.array(sample_seeds("root", 3, 4)).reshape(3, 4)
    assert plain["seeds"].tolist() == seeds[:, :3].reshape(-1).tolist()  # no filter: the first 3 of every class
    kept = filtered["candidate_kept"].numpy()
    assert filtered["seeds"].tolist() == seeds[kept].tolist()
    # an image depends only on its seed and prompt: candidates kept by both sets are the same pixels
    same = [i for i, s in enumerate(filtered["seeds"].tolist()) if s in plain["seeds"].tolist()]
    where = [plain["seeds"].tolist().index(filtered["seeds"][i].item()) for i in same]
    assert same and torch.equal(filtered["images"][same], plain["images"][where])


def test_keep_top_and_candidate_counts():
    assert keep_top(np.array([0.1, 0.9, 0.5, 0.9, 0.2]), 3).tolist() == [1, 2, 3]
    assert keep_top(np.array([0.3, 0.3, 0.3]), 2).tolist() == [0, 1]  # ties: the earlier seeds
    assert [candidates_per_class(v, 0.2) for v in (1, 4, 8, 100)] == [2, 5, 10, 125]
    assert candidates_per_class(7, None) == 7


def test_class_unet_mapping_and_guidance_errors(tmp_path):
    from study.grid import PretrainedSpec, SampleSpec

    spec = PretrainedSpec(model="m", class_index={"0": 3, "1": 2})
    assert class_rows(spec, 5, 4, ["0", "1"], "g") == [3, 2]
    with pytest.raises(PretrainedError, match=r"g.pretrained.class_index: study classes \['2'\] are not mapped"):
        class_rows(spec, 5, 4, ["0", "1", "2"], "g")
    with pytest.raises(PretrainedError, match="row 4 is the null class"):
        class_rows(PretrainedSpec(model="m", class_index={"0": 4}), 5, 4, ["0"], "g")
    with pytest.raises(PretrainedError, match="the checkpoint has 4 classes besides its null class, the dataset 3"):
        class_rows(PretrainedSpec(model="m"), 5, 4, ["0", "1", "2"], "g")
    (tmp_path / PRETRAINED_META).write_text(json.dumps({"kind": "class-unet", "has_null": False, "model": "m"}))
    check_guidance(tmp_path, SampleSpec(guidance=1.0), "generators.u")
    with pytest.raises(PretrainedError, match="generators.u.sample.guidance: 2.0 needs a null class"):
        check_guidance(tmp_path, SampleSpec(guidance=2.0), "generators.u")


@pytest.mark.parametrize("name", ["cifar.yaml", "openset.yaml"])
def test_example_grids_have_closed_and_open_arms(name):
    grid = load_grid(Path(__file__).resolve().parent.parent / "grids" / name)
    assert {gen.kind for gen in grid.generators.values()} == {"closed", "open"}
