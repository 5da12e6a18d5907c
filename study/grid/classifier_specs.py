"""Classifier, analysis and diagnostics blocks of a grid file (`classifier:`, `analysis:`, `diagnostics:`;
study.grid.schema), and how real and synthetic images are mixed in classifier batches (`mix`). Never imports
torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from study.grid.base import NonNegativeInt, PositiveInt, Strict

# --- mixing real and synthetic data in classifier batches --------------------------------------------


class FractionMix(Strict):
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)]  # share of synthetic images in every batch


MixSpec = Literal["uniform"] | FractionMix  # uniform: concatenate and sample uniformly (the source paper)


def mix_label(mix: MixSpec) -> str:
    return mix if isinstance(mix, str) else f"fraction={mix.fraction:g}"


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
    verification AUC, EER and TAR a bootstrap's p (1 - p) / Var, study.verification; for the test AUC
    A (1 - A) / Var with Hanley & McNeil's Var, study.metrics.auc_trials). EER is analysed as 1 - EER."""

    trials: str
    higher_is_better: bool
    label: str
    verification: bool  # measured on a face dataset's verification pairs (else on a test split)


ANALYSIS_METRICS = {
    "test_acc": MetricColumn("n_test", True, "test accuracy", False),
    "test_auc": MetricColumn("test_auc_n", True, "test AUC", False),
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
