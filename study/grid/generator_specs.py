"""Generator blocks of a grid file (`generators:`; study.grid.schema): the model, its training, its sampling
(conditional, AugGen and ScoreMix mixing), open-set sources (another dataset, a pretrained model). Never
imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from study.grid.base import GridError, NonNegativeInt, PositiveInt, Probability, Strict
from study.grid.classifier_specs import MixSpec
from study.grid.dataset_specs import DatasetSpec

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
