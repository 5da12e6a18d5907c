"""The grid file's schema (DESIGN 3.2): one strict pydantic model per block, with defaults and the checks that
span keys. Unknown keys, wrong types, empty or negative sizes, duplicate names and contradictory options are
errors (`GridError`, raised by study.grid.load with the key path). Never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from study.errors import StudyInputError

SCHEMA_VERSION = 3  # bump to invalidate every cached artifact deliberately (2: one judge per seed, diagnostics;
# 3: generator objectives edm / snr_gamma, model.attention)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a directory name and part of slugs: at most 64 characters
RESERVED_ARMS = ("real-only", "real-extra")


class GridError(StudyInputError, ValueError):
    """Bad input in a grid file: the message names the file, the key path and what was expected."""


class Strict(BaseModel):
    """Base of every schema node: unknown keys are errors, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


# --- datasets ----------------------------------------------------------------------------------------
# One option model per dataset name; `study.data.datasets.LOADERS` holds the loader for the same names.


class _DatasetBase(Strict):
    resolution: PositiveInt | None = None  # resize to this many pixels a side; None keeps the native size
    flip: bool | None = None  # horizontal flips allowed as augmentation; None = the dataset's default


class DigitsData(_DatasetBase):
    """scikit-learn's bundled 8x8 digits (1797 images); a fixed stratified split gives the test set."""

    name: Literal["digits"]
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3


class MedmnistData(_DatasetBase):
    name: Literal["medmnist"]
    flavor: str  # e.g. breastmnist, pneumoniamnist, bloodmnist
    size: Literal[28, 64, 128, 224] = 28
    root: str | None = None  # folder with <flavor>.npz (or <flavor>_<size>.npz); downloads there when online


class Cifar10Data(_DatasetBase):
    name: Literal["cifar10"]
    root: str | None = None  # torchvision layout (cifar-10-batches-py/); downloads there when online


class Cifar100Data(_DatasetBase):
    name: Literal["cifar100"]
    root: str | None = None


class ImageFolderData(_DatasetBase):
    """`root/train/<class>/*` plus `root/val/<class>/*` or `root/test/<class>/*` (e.g. an ImageNet subset)."""

    name: Literal["imagefolder"]
    root: str
    classes: list[str] | None = None  # a subset of class folders, in this order; None = all, sorted
    resolution: PositiveInt = 64
    grey: bool = False


class NpzData(_DatasetBase):
    """One .npz with `{split}_images`, `{split}_labels` (train, test, optional val) and optional `class_names`."""

    name: Literal["npz"]
    path: str


# Face datasets (study.data.faces): the classes are *training identities*; a verification protocol of pairs of
# other identities replaces the test split, and no training identity is ever in a pair (checked when loaded).

IdentityChoice = PositiveInt | Literal["all"] | Annotated[list[str], Field(min_length=2)]


class _FaceData(_DatasetBase):
    resolution: PositiveInt = 32
    crop: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # centre crop: this fraction of the shorter side, then resize
    # Training identities: all that qualify, a count (a fixed random choice among them, the same on every
    # machine), or names.
    identities: IdentityChoice = "all"


class _FaceTree(_FaceData):
    min_images: PositiveInt = 2  # an identity trains only with at least this many images (>= real.base + real.extra)
    grey: bool | None = None  # None: as stored (greyscale when the files are single-channel)


class LfwData(_FaceTree):
    """LFW's layout `root/<Name>/<Name>_NNNN.jpg` and a pairs file in LFW's format (View 1: a count line, then
    `name i j` same pairs and `name1 i name2 j` different pairs; View 2: a `folds n` line and `folds` blocks).
    Training identities: those of `root` in no pair of `pairs`, with at least `min_images` images."""

    name: Literal["lfw"]
    root: str
    pairs: str


class AttData(_FaceData):
    """The AT&T (ORL) faces npz (40 x 10, 112 x 92): identities s1-s28 train, s29-s40 verify (every pair of
    their 120 images; rank-1 with image 1 of each as the gallery)."""

    name: Literal["att"]
    path: str | None = None  # default $STUDY_DATA/att_faces/att_faces.npz


class IdentityFolderData(_FaceTree):
    """A tree `root/<identity>/<image files>` (CASIA-WebFace, VGGFace2 style; no split folders): `verify`
    identities (a seeded choice among those with >= 2 images, or names) are held out for verification, every
    pair of their images (or `max_pairs` of each kind); rank-1 with each one's first image as the gallery."""

    name: Literal["identityfolder"]
    root: str
    verify: PositiveInt | Annotated[list[str], Field(min_length=2)]
    split_seed: NonNegativeInt = 0  # the seeded choice of verification (and counted training) identities
    max_pairs: PositiveInt | None = None  # per kind (same, different): a seeded sample; None: every pair


FACE_DATASETS = ("lfw", "att", "identityfolder")

DatasetSpec = Annotated[
    DigitsData | MedmnistData | Cifar10Data | Cifar100Data | ImageFolderData | NpzData | LfwData | AttData
    | IdentityFolderData,
    Field(discriminator="name"),
]  # fmt: skip
DATASET_SPECS: dict[str, type[Strict]] = {
    "digits": DigitsData,
    "medmnist": MedmnistData,
    "cifar10": Cifar10Data,
    "cifar100": Cifar100Data,
    "imagefolder": ImageFolderData,
    "npz": NpzData,
    "lfw": LfwData,
    "att": AttData,
    "identityfolder": IdentityFolderData,
}


# Options that say where a canonical dataset lives, not what it is: moving the files keeps every key.
_LOCATION_OPTIONS = {"root", "path"}
_CANONICAL = {"digits", "medmnist", "cifar10", "cifar100", "att"}
_PATHS = {"npz": ("path",), "lfw": ("root", "pairs")}  # the files that are the data; others: `root`


def dataset_identity(spec) -> dict:
    """What a dataset *is*, for keys: its options minus local paths for canonical datasets; for npz, imagefolder
    and the face trees the resolved paths are part of the identity (a different file is different data)."""
    d = spec.model_dump(mode="json", exclude_none=True)
    if spec.name in _CANONICAL:
        d = {k: v for k, v in d.items() if k not in _LOCATION_OPTIONS}
    else:
        for field in _PATHS.get(spec.name, ("root",)):
            d[field] = str(Path(d[field]).expanduser().resolve())
    d.pop("flip", None)  # flips change training, not the data; stages that flip key on it themselves
    return d


def is_face(spec) -> bool:
    """A face (verification) dataset: training identities as classes, verification pairs of other identities."""
    return spec.name in FACE_DATASETS


def dataset_label(spec) -> str:
    """A readable name for tables and slugs: the MedMNIST flavor, else the registry name."""
    return getattr(spec, "flavor", None) or spec.name


# --- real and synthetic sizes ------------------------------------------------------------------------


def _distinct_sorted(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("values must be distinct")
    return sorted(values)


class RealSpec(Strict):
    base: Annotated[list[PositiveInt], Field(min_length=1)]  # base images per class
    extra: list[PositiveInt] = []  # extra real images per class for the real-extra arm

    _sorted = field_validator("base", "extra")(_distinct_sorted)


class SyntheticSpec(Strict):
    volume: Annotated[list[PositiveInt], Field(min_length=1)] | None = None  # synthetic images per class
    ratio: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | None = None  # x base

    _sorted = field_validator("volume", "ratio")(lambda v: None if v is None else _distinct_sorted(v))

    @model_validator(mode="after")
    def _one_of(self):
        if self.volume is not None and self.ratio is not None:
            raise ValueError("give either `volume` or `ratio`, not both")
        if self.volume is None and self.ratio is None:
            raise ValueError("give `volume` (images per class) or `ratio` (multiples of the base size)")
        return self

    def volumes_for(self, base_per_class: int) -> list[int]:
        if self.volume is not None:
            return list(self.volume)
        return sorted({max(1, round(r * base_per_class)) for r in self.ratio})


# --- mixing real and synthetic data in classifier batches --------------------------------------------


class FractionMix(Strict):
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)]  # share of synthetic images in every batch


MixSpec = Literal["uniform"] | FractionMix  # uniform: concatenate and sample uniformly (the source paper)


def mix_label(mix: MixSpec) -> str:
    return mix if isinstance(mix, str) else f"fraction={mix.fraction:g}"


# --- generators --------------------------------------------------------------------------------------


class ModelSpec(Strict):
    preset: Literal["tiny", "xs", "s", "m", "l"] = "s"
    # what the network is trained to output (study.models.objectives): DDPM epsilon or v, or edm (Karras et al.
    # 2022: a preconditioned denoiser trained on log-normal noise levels, `train.edm`)
    prediction: Literal["epsilon", "v_prediction", "edm"] = "epsilon"
    channels: list[PositiveInt] | None = None  # override the preset's block widths
    layers_per_block: PositiveInt | None = None
    attention: bool | None = None  # self-attention at the lowest resolution and in the middle; None: the preset's
    dropout: Probability = 0.0


class EDMSpec(Strict):
    """EDM training (Karras et al. 2022, Table 1): ln(sigma) ~ N(p_mean, p_std^2); sigma_data is the data's
    standard deviation in the preconditioning (images in [-1, 1])."""

    p_mean: float = -1.2
    p_std: Annotated[float, Field(gt=0)] = 1.2
    sigma_data: Annotated[float, Field(gt=0)] = 0.5


EDM_DEFAULTS = EDMSpec()


class GeneratorTrainSpec(Strict):
    steps: PositiveInt = 20000
    batch_size: PositiveInt = 128
    lr: Annotated[float, Field(gt=0)] = 1e-3
    warmup: NonNegativeInt = 200
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    label_dropout: Probability = 0.1  # null-class probability, enables classifier-free guidance
    noise_schedule: Literal["linear", "cosine", "scaled_linear"] = "cosine"  # DDPM (epsilon / v) only
    timesteps: PositiveInt = 1000
    snr_gamma: Annotated[float, Field(gt=0)] | None = None  # min-SNR-gamma loss weight (epsilon / v); None: uniform
    edm: EDMSpec | None = None  # model.prediction edm only; None: EDMSpec's defaults
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: by the machine (study.models.device)
    flip: bool | None = None  # horizontal flips; None = the dataset's default (never for digits)
    checkpoint_every: PositiveInt = 500  # resume granularity; does not change results, not keyed


Strategy = Literal["conditional", "auggen", "scoremix"]
PairRule = Literal["random", "far", "near", "far-condition", "near-condition"]
LabelPolicy = Literal["new-class", "soft", "dominant"]
SEARCH_RANGE = (0.1, 1.1)  # AugGen's alpha/beta grid (Rahimi et al. 2025)
MIXING_KEYS = ("pairs", "n_pairs", "labels", "step_range")  # condition / score mixing only
_USED_BY = {**{k: ("auggen", "scoremix") for k in MIXING_KEYS}, "weight": ("scoremix",), "alpha": ("auggen",),
            "beta": ("auggen",), "search": ("auggen",)}  # fmt: skip


class AugGenSearch(Strict):
    """AugGen's alpha/beta grid search in the pair classifier's embedding space (study.sampling.pairs.search_alpha_beta)."""

    step: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1  # grid spacing over [0.1, 1.1]; 0.1 is the paper's 11 x 11
    pairs: PositiveInt = 4  # the first pairs of the set score every grid point
    images: Annotated[int, Field(ge=2)] = 8  # images per pair and grid point (the same seeds at every point)


class SampleSpec(Strict):
    """How a generator is sampled. Mixing strategies (auggen, scoremix) sample `n_pairs` class pairs (i, j); the
    volume stays the total: `volume_per_class` x classes synthetic images spread over the pairs (pair p gets
    total // n_pairs images, plus one for the first total % n_pairs pairs), so a smaller volume is a prefix of
    every pair's images and `n_syn` counts synthetic images whatever the strategy. Mixing options left at None
    take the defaults named beside them; giving one to a strategy that does not use it is an error."""

    sampler: Literal["ddim", "dpmpp", "heun", "ddpm"] = "dpmpp"
    steps: PositiveInt = 20
    guidance: Annotated[float, Field(ge=0)] = 1.5  # classifier-free guidance scale; 1 = none, 0 = unconditional
    strategy: Strategy = "conditional"
    pairs: PairRule | None = None  # random; far/near: class centroids of the base classifier; *-condition: the
    # generator's class embeddings (cosine distance)
    n_pairs: PositiveInt | None = None  # None: as many pairs as classes (at most every pair once)
    labels: LabelPolicy | None = None  # new-class: each pair a class; soft: mixing-weighted targets; dominant
    step_range: tuple[Probability, Probability] | None = None  # [start, end) of the trajectory to mix (0 = noise);
    # outside it the model output is class i's alone
    weight: Probability | None = None  # ScoreMix lambda (0.5): lambda*eps_i + (1-lambda)*eps_j, convex only
    alpha: float | Literal["search"] | None = None  # AugGen condition alpha*E[i] + beta*E[j], in [0.1, 1.1]
    beta: float | Literal["search"] | None = None  # in [0, 1.1] (0: class i alone); None for either: "search"
    search: AugGenSearch | None = None  # the alpha/beta search's settings (AugGenSearch defaults)
    batch_size: PositiveInt = 256  # does not change results (per-sample seeds), not keyed

    @field_validator("alpha", "beta", mode="before")
    @classmethod
    def _in_search_range(cls, value, info):
        low = SEARCH_RANGE[0] if info.field_name == "alpha" else 0.0  # beta = 0 leaves class i alone
        if value is None or value == "search":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= SEARCH_RANGE[1]:
            raise ValueError(f"expected a number in [{low:g}, {SEARCH_RANGE[1]:g}] or 'search'")
        return value

    @model_validator(mode="after")
    def _options_fit_the_strategy(self):
        for key, users in _USED_BY.items():
            if getattr(self, key) is not None and self.strategy not in users:
                raise ValueError(f"`{key}` is a setting of strategy {' and '.join(users)}, not {self.strategy}")
        if self.step_range is not None and not self.step_range[0] < self.step_range[1]:
            raise ValueError(f"step_range: expected [start, end) with start < end, got {list(self.step_range)}")
        if self.search is not None and not self.searches:
            raise ValueError("`search` settings are given but neither alpha nor beta is searched")
        return self

    @property
    def mixing(self) -> bool:
        return self.strategy != "conditional"

    @property
    def pair_rule(self) -> PairRule:
        return self.pairs or "random"

    @property
    def label_policy(self) -> LabelPolicy:
        return self.labels or "new-class"

    # A pair's class weights (i, j), defaults resolved: ScoreMix (lambda, 1 - lambda) on the two model outputs,
    # AugGen (alpha, beta) on the two class embeddings ("search": chosen by the search); None for conditional.
    # (`mix` is batch mixing of real and synthetic images, never these.)

    @property
    def pair_weight_i(self) -> float | Literal["search"] | None:
        if self.strategy == "scoremix":
            return 0.5 if self.weight is None else self.weight
        if self.strategy == "auggen":
            return "search" if self.alpha is None else self.alpha
        return None

    @property
    def pair_weight_j(self) -> float | Literal["search"] | None:
        if self.strategy == "scoremix":
            return 1.0 - self.pair_weight_i
        if self.strategy == "auggen":
            return "search" if self.beta is None else self.beta
        return None

    @property
    def searches(self) -> bool:
        """AugGen's alpha or beta comes from the grid search."""
        return self.strategy == "auggen" and "search" in (self.pair_weight_i, self.pair_weight_j)

    @property
    def needs_classifier(self) -> bool:
        """Pairs or the alpha/beta search read the base classifier's embedding space."""
        return self.mixing and (self.pair_rule in ("far", "near") or self.searches)

    def identity(self) -> dict:
        """What changes the samples, defaults resolved (for keys and seeds): never `batch_size` or `labels`
        (labels are the classifier's business), and only the settings the strategy reads."""
        out = {"sampler": self.sampler, "steps": self.steps, "guidance": self.guidance, "strategy": self.strategy}
        if not self.mixing:
            return out
        out |= {"pairs": self.pair_rule, "n_pairs": self.n_pairs, "step_range": self.step_range}
        if self.strategy == "scoremix":
            return out | {"weight": self.pair_weight_i}
        out |= {"alpha": self.pair_weight_i, "beta": self.pair_weight_j}
        if self.searches:
            out["search"] = (self.search or AugGenSearch()).model_dump(mode="json")
        return out


ClassRef = str | NonNegativeInt  # a class by name, or by index in the dataset's class list


def class_index(ref: str | int, names: Sequence[str], what: str, error: type[Exception] | None = None) -> int:
    """The index in `names` of a class given by name or index; `what` names the grid key in the error."""
    error = error or GridError
    if isinstance(ref, int):
        if not 0 <= ref < len(names):
            raise error(f"{what} index {ref} is out of range (0..{len(names) - 1})")
        return ref
    if ref not in names:
        raise error(f"{what} {ref!r} does not exist; expected one of {list(names)[:20]}")
    return list(names).index(ref)


class OtherDataset(Strict):
    """`train_on: {dataset: {...}, classes: {their class: our class}}`: the generator is trained on the training
    split of another dataset. Only the listed classes are used (several may map onto one of ours); every class
    of the study must receive at least one, and the images are fitted to the study's resolution and channels."""

    dataset: DatasetSpec
    classes: Annotated[dict[ClassRef, ClassRef], Field(min_length=1)]


class ClipFilterSpec(Strict):
    """Drop the lowest-scoring fraction of text-to-image samples by CLIP image-text similarity, per class."""

    model: str  # a local directory or hub id of a transformers CLIP model (e.g. openai/clip-vit-base-patch32)
    revision: str | None = None
    drop: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2  # the source paper drops 20%


UNET_OPTIONS = ("class_index", "null_class")
TEXT2IMAGE_OPTIONS = ("prompt", "negative_prompt", "class_names", "size", "filter")


class PretrainedSpec(Strict):
    """`pretrained: PATH_OR_HUB_ID` or a mapping: a diffusers model used as it is (open-set). `kind: auto` reads
    the model: a class-conditional `UNet2DModel` (a study generator directory, a pipeline with one, or a bare
    UNet with its scheduler config) or a text-to-image `DiffusionPipeline` sampled with class prompts."""

    model: Annotated[str, Field(min_length=1)]  # a local directory, else a Hugging Face hub id (org/name)
    revision: str | None = None  # hub branch, tag or commit (pin a commit: hub ids are keyed by id + revision)
    kind: Literal["auto", "class-unet", "text2image"] = "auto"
    # class-conditional UNet: which row of the checkpoint's class table each study class uses
    class_index: dict[ClassRef, NonNegativeInt] | None = None  # None: identity (the class counts must match)
    null_class: NonNegativeInt | None = None  # the checkpoint's null class (study generators record theirs)
    # text-to-image: image j of a class is prompted with template j mod len(prompt), `{class}` filled in
    prompt: str | Annotated[list[str], Field(min_length=1)] = "a photo of a {class}"
    negative_prompt: str | None = None
    class_names: dict[ClassRef, str] = {}  # the text for `{class}`; default: the dataset's class name
    size: PositiveInt | None = None  # generation resolution; None: the pipeline's default (then resized)
    filter: ClipFilterSpec | None = None

    @model_validator(mode="after")
    def _options_fit_the_kind(self):
        for template in [self.prompt] if isinstance(self.prompt, str) else self.prompt:
            if "{class}" not in template:
                raise ValueError(f"prompt: template {template!r} has no {{class}} placeholder")
        unet = [k for k in UNET_OPTIONS if k in self.model_fields_set]
        text = [k for k in TEXT2IMAGE_OPTIONS if k in self.model_fields_set]
        if unet and text:
            raise ValueError(f"{unet} are class-unet options and {text} text2image options; a model is one kind")
        wrong = unet if self.kind == "text2image" else text if self.kind == "class-unet" else []
        if wrong:
            raise ValueError(f"{wrong} do not apply to kind {self.kind!r}")
        return self

    @property
    def templates(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class GeneratorSpec(Strict):
    """One generator arm: what the generator is trained on, how, and how it is sampled. Closed-set: trained on
    the base set. Open-set: trained on the whole training pool, on another dataset, or a pretrained model
    (whose arm ignores `model` and `train`)."""

    train_on: Literal["base", "pool"] | OtherDataset = "base"  # base: closed-set; pool / another dataset: open-set
    pretrained: PretrainedSpec | None = None  # a diffusers model used as it is (open-set); no training
    model: ModelSpec = ModelSpec()
    train: GeneratorTrainSpec = GeneratorTrainSpec()
    sample: SampleSpec = SampleSpec()
    mix: MixSpec | None = None  # overrides classifier.mix for this arm

    @field_validator("pretrained", mode="before")
    @classmethod
    def _path_alone(cls, value):
        return {"model": value} if isinstance(value, str) else value  # `pretrained: PATH` is `{model: PATH}`

    @model_validator(mode="after")
    def _one_source(self):
        if self.pretrained is not None and "train_on" in self.model_fields_set:
            raise ValueError("give `train_on` (a generator to train) or `pretrained` (a model to use), not both")
        return self

    @model_validator(mode="after")
    def _training_fits_the_prediction(self):
        edm = self.model.prediction == "edm"
        if edm and self.train.snr_gamma is not None:
            raise ValueError("train.snr_gamma weights the epsilon / v loss; model.prediction edm uses EDM's weighting")
        if edm and "noise_schedule" in self.train.model_fields_set:
            raise ValueError(
                "train.noise_schedule is a DDPM setting; model.prediction edm draws noise levels from train.edm"
            )
        if not edm and self.train.edm is not None:
            raise ValueError(f"train.edm applies to model.prediction edm, not {self.model.prediction}")
        return self

    @property
    def kind(self) -> Literal["closed", "open"]:
        return "closed" if self.train_on == "base" and self.pretrained is None else "open"


# --- classifier --------------------------------------------------------------------------------------


MarginLoss = Literal["arcface", "cosface", "adaface", "softmax"]
# scale s and margin m of each loss as its paper trains faces: ArcFace (Deng et al. 2019) s 64, m 0.5; CosFace
# (Wang et al. 2018) s 64, m 0.35; AdaFace (Kim et al. 2022) s 64, m 0.4 (h 0.333). softmax: a plain linear layer.
MARGIN_DEFAULTS = {"arcface": (64.0, 0.5), "cosface": (64.0, 0.35), "adaface": (64.0, 0.4), "softmax": (None, None)}


class EmbeddingSpec(Strict):
    """A face embedding model (study.models.embedding): the classifier's backbone, then an embedding layer
    (BN, dropout, linear, BN) and a margin-loss head over the training identities (and any new identities the
    synthetic set adds). Verification compares L2-normalised embeddings by cosine similarity."""

    dim: PositiveInt = 128
    loss: MarginLoss = "arcface"
    scale: Annotated[float, Field(gt=0)] | None = None  # s; None: the loss's default (MARGIN_DEFAULTS)
    margin: Annotated[float, Field(ge=0, lt=1.5)] | None = None  # m; None: the loss's default
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # before the embedding's linear layer
    pool: Literal["flatten", "avg"] = "flatten"  # the last feature map flattened (ArcFace's E), or averaged

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data):
        # Resolved before keys are taken, so a key always holds the s and m that trained the model.
        if isinstance(data, dict):
            scale, margin = MARGIN_DEFAULTS.get(data.get("loss", "arcface"), (None, None))  # unknown loss: named below
            data = {"scale": scale, "margin": margin, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _softmax_has_no_margin(self):
        if self.loss == "softmax" and (self.scale is not None or self.margin is not None):
            raise ValueError(
                "`scale` and `margin` belong to the margin losses (arcface, cosface, adaface), not softmax"
            )
        return self


class ClassifierSpec(Strict):
    arch: str = "resnet18"  # any timm model name; small-image stems are applied for 8-64 px inputs
    steps: PositiveInt | None = 4000  # fixed optimisation budget (adding data must not add compute)
    epochs: PositiveInt | None = None  # alternative budget; give `steps: null` to use it
    batch_size: PositiveInt = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Annotated[float, Field(gt=0)] = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    schedule: Literal["cosine", "onecycle", "multistep"] = "cosine"  # multistep: x0.1 at 50% and 75% (MedMNIST v2)
    warmup: NonNegativeInt = 0
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    augment: bool = True  # random crop with padding (+ flips where the dataset allows them)
    width: PositiveInt | None = None  # base width: study_cnn w (w, 2w, 4w); ResNets: stages (w, 2w, 4w, 8w)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: by the machine (study.models.device)
    stem: Literal["auto", "small", "stock"] = "auto"  # auto: small (3x3 stride 1, no max-pool) for inputs <= 64 px
    select: Literal["last", "val_acc", "val_auc"] = "last"  # keep the last weights, or the best on the val split
    val_checks: PositiveInt = 10  # evenly spaced val evaluations when `select` is not `last`
    mix: MixSpec = "uniform"
    eval_batch_size: PositiveInt = 512  # does not change results, not keyed
    # Extra keyword arguments for timm.create_model, e.g. {drop_rate: 0.1} or {zero_init_last: false}.
    model_kwargs: dict[str, Any] = {}
    embedding: EmbeddingSpec | None = None  # face datasets: an embedding model with a margin loss (the default)

    @model_serializer(mode="wrap")
    def _omit_empty_options(self, handler):
        # Left out when empty, so specs written before the fields existed keep their keys (and caches).
        data = handler(self)
        if not self.model_kwargs:
            data.pop("model_kwargs", None)
        if self.embedding is None:
            data.pop("embedding", None)
        return data

    @model_validator(mode="after")
    def _one_budget(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one training budget: `steps` or `epochs` (set the other to null)")
        return self


# --- analysis ----------------------------------------------------------------------------------------
# How study.analysis and study.report read the results: never part of a cache key (nothing is computed from it).

PublishedSetting = Literal["cifar10", "bloodmnist", "imagenet100"]  # study.analysis.published.PUBLISHED's settings


@dataclass(frozen=True)
class MetricColumn:
    """A cells.csv column the equivalence analysis can be run on, with its noise model: `trials` names the column
    holding its effective number of binomial trials (the test images for accuracy; pairs for pair accuracy; for
    AUC, EER and TAR a bootstrap's p (1 - p) / Var, study.verification). EER is analysed as 1 - EER."""

    trials: str
    higher_is_better: bool
    label: str
    verification: bool  # measured on a face dataset's verification pairs (else on a test split)


ANALYSIS_METRICS = {
    "test_acc": MetricColumn("n_test", True, "test accuracy", False),
    "verif_acc": MetricColumn("verif_acc_n", True, "pair accuracy", True),
    "verif_auc": MetricColumn("verif_auc_n", True, "verification AUC", True),
    "verif_eer": MetricColumn("verif_eer_n", False, "EER", True),
    **{f"tar_at_far_{f}": MetricColumn(f"tar_at_far_{f}_n", True, f"TAR@FAR={f}", True) for f in ("1e-1", "1e-2", "1e-3")},
}  # fmt: skip


class AnalysisSpec(Strict):
    # The source paper's setting this grid reproduces, for its published closed-form constants (SCIENCE.md 1).
    # None: matched by the dataset itself (cifar10; medmnist flavor bloodmnist); an npz file or an image folder
    # has to be named here.
    published: PublishedSetting | None = None
    # What the equivalence analysis measures beta and k on: a cells.csv metric column (ANALYSIS_METRICS); None:
    # `test_acc` for classification grids, `verif_acc` (LFW pair accuracy) for face grids.
    metric: str | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, metric):
        if metric is not None and metric not in ANALYSIS_METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {list(ANALYSIS_METRICS)}")
        return metric


# --- sample-set diagnostics (study.sampling.diagnostics) ----------------------------------------------


class DomainClassifierSpec(Strict):
    """The real-vs-synthetic domain classifier: a small CNN, cross-validated (its AUC is `domain_auc`). Its own
    recipe, not the grid's classifier: `folds` trainings per sample set must stay cheap beside the cells."""

    arch: str = "study_cnn"
    width: PositiveInt | None = 16
    steps: PositiveInt = 120  # x batch_size x folds = 19,200 images: one quickstart cell's training budget
    batch_size: PositiveInt = 32
    lr: Annotated[float, Field(gt=0)] = 3e-3
    folds: Annotated[int, Field(ge=2, le=20)] = 5


class DiagnosticsSpec(Strict):
    """Which sample-set diagnostics run (memorisation and fidelity always do: they cost seconds). `domain: null`
    or `cas: false` skip the two that train classifiers; `inception` (or $STUDY_INCEPTION_WEIGHTS) is a local
    file of torch-fidelity's Inception-v3 FID weights: the standard FID is computed only when it exists."""

    domain: DomainClassifierSpec | None = DomainClassifierSpec()
    cas: bool = True  # classification accuracy score: the grid's classifier trained on synthetic images alone
    inception: str | None = None


# --- the grid ----------------------------------------------------------------------------------------

DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"


def check_device(device: str) -> str:
    """The device's form (whether CUDA is there is checked where torch is: the runner's pre-flight)."""
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return device


class Grid(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    dataset: DatasetSpec
    real: RealSpec
    synthetic: SyntheticSpec | None = None
    generators: dict[str, GeneratorSpec] = {}
    classifier: ClassifierSpec = ClassifierSpec()
    diagnostics: DiagnosticsSpec = DiagnosticsSpec()
    seeds: Annotated[list[NonNegativeInt], Field(min_length=1)]
    device: str = "auto"  # auto | cpu | cuda | cuda:N; never part of a key
    analysis: AnalysisSpec = AnalysisSpec()  # never part of a key: it reads the table
    smoke: dict[str, Any] | None = None  # deep-merged over the grid by --smoke

    _sorted = field_validator("seeds")(_distinct_sorted)
    _device = field_validator("device")(check_device)

    @property
    def metric(self) -> str:
        """The column the equivalence analysis runs on (`analysis.metric`, or the dataset kind's default)."""
        return self.analysis.metric or ("verif_acc" if is_face(self.dataset) else "test_acc")

    @field_validator("generators")
    @classmethod
    def _arm_names(cls, generators):
        for arm in generators:
            if arm in RESERVED_ARMS or not re.match(NAME_PATTERN, arm):
                raise ValueError(f"arm name {arm!r} must match {NAME_PATTERN} and not be one of {RESERVED_ARMS}")
        return generators

    @model_validator(mode="before")
    @classmethod
    def _faces_train_embeddings(cls, data):
        # A face dataset trains an embedding model unless `classifier.embedding: null` asks for a plain classifier
        # (whose penultimate features are then compared).
        if isinstance(data, dict) and isinstance(data.get("dataset"), dict):
            clf = data.get("classifier", {})
            if data["dataset"].get("name") in FACE_DATASETS and isinstance(clf, dict) and "embedding" not in clf:
                data = {**data, "classifier": {**clf, "embedding": {}}}
        return data

    @model_validator(mode="after")
    def _synthetic_needed(self):
        if self.generators and self.synthetic is None:
            raise ValueError("`generators` are given but `synthetic` (volume or ratio) is missing")
        return self

    @model_validator(mode="after")
    def _published_fits_the_dataset(self):
        named, label = self.analysis.published, dataset_label(self.dataset)
        if named is not None and label in get_args(PublishedSetting) and label != named:
            raise ValueError(
                f"analysis.published is {named!r} but the dataset is {label!r}, a published setting itself"
            )
        return self

    @model_validator(mode="after")
    def _faces_fit(self):
        need = max(self.real.base) + max(self.real.extra, default=0)
        have = getattr(self.dataset, "min_images", None)
        if have is not None and need > have:
            raise ValueError(
                f"real.base + real.extra ask for {need} images per identity but dataset.min_images is {have}: "
                f"identities with fewer could not supply them (set dataset.min_images: {need} or more)"
            )
        metric = self.analysis.metric
        if metric is not None and ANALYSIS_METRICS[metric].verification != is_face(self.dataset):
            what = "a face dataset's verification pairs" if is_face(self.dataset) else "a test split"
            raise ValueError(f"analysis.metric: {metric!r} is not measured on {what} (dataset {self.dataset.name!r})")
        emb = self.classifier.embedding
        if emb is not None and emb.loss != "softmax":
            soft = [arm for arm, g in self.generators.items() if g.sample.mixing and g.sample.label_policy == "soft"]
            if soft:
                raise ValueError(
                    f"generators {soft}: `labels: soft` has no target for the margin loss {emb.loss!r}; use "
                    "`labels: new-class` (mixed identities, the papers' recipe) or `dominant`, or `loss: softmax`"
                )
        return self
