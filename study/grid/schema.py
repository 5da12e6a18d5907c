"""The grid file's schema (DESIGN 3.2): one strict pydantic model per block, with defaults and the checks that
span keys. Unknown keys, wrong types, empty or negative sizes, duplicate names and contradictory options are
errors (`GridError`, raised by study.grid.load with the key path). Never imports torch.

The blocks live beside this module and are all importable from here: study.grid.base (Strict, GridError, the
constrained numbers), study.grid.dataset_specs (`dataset:`), study.grid.generator_specs (`generators:`),
study.grid.classifier_specs (`classifier:`, `mix`, `analysis:`, `diagnostics:`). This module holds the cache
version, the real and synthetic sizes and the grid itself with its cross-block checks.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, get_args

from pydantic import Field, field_validator, model_validator

from study.grid.base import GridError, NonNegativeInt, PositiveInt, Probability, Strict, distinct_sorted
from study.grid.classifier_specs import (
    ANALYSIS_METRICS,
    MARGIN_DEFAULTS,
    AnalysisSpec,
    ClassifierSpec,
    DiagnosticsSpec,
    DomainClassifierSpec,
    EmbeddingSpec,
    FractionMix,
    MarginLoss,
    MetricColumn,
    MixSpec,
    PublishedSetting,
    mix_label,
)
from study.grid.dataset_specs import (
    DATASET_SPECS,
    FACE_DATASETS,
    AttData,
    Cifar10Data,
    Cifar100Data,
    DatasetSpec,
    DigitsData,
    IdentityChoice,
    IdentityFolderData,
    ImageFolderData,
    LfwData,
    MedmnistData,
    NpzData,
    dataset_identity,
    dataset_label,
    is_face,
)
from study.grid.generator_specs import (
    EDM_DEFAULTS,
    MIXING_KEYS,
    SEARCH_RANGE,
    TEXT2IMAGE_OPTIONS,
    UNET_OPTIONS,
    AugGenSearch,
    ClassRef,
    ClipFilterSpec,
    EDMSpec,
    GeneratorSpec,
    GeneratorTrainSpec,
    LabelPolicy,
    ModelSpec,
    OtherDataset,
    PairRule,
    PretrainedSpec,
    SampleSpec,
    Strategy,
    class_index,
)

SCHEMA_VERSION = 3  # bump to invalidate every cached artifact deliberately (2: one judge per seed, diagnostics;
# 3: generator objectives edm / snr_gamma, model.attention)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a directory name and part of slugs: at most 64 characters
RESERVED_ARMS = ("real-only", "real-extra")


class RealSpec(Strict):
    base: Annotated[list[PositiveInt], Field(min_length=1)]  # base images per class
    extra: list[PositiveInt] = []  # extra real images per class for the real-extra arm

    _sorted = field_validator("base", "extra")(distinct_sorted)


class SyntheticSpec(Strict):
    volume: Annotated[list[PositiveInt], Field(min_length=1)] | None = None  # synthetic images per class
    ratio: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | None = None  # x base

    _sorted = field_validator("volume", "ratio")(lambda v: None if v is None else distinct_sorted(v))

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

    _sorted = field_validator("seeds")(distinct_sorted)
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


__all__ = [  # every name the schema had before its blocks moved to their own modules
    "ANALYSIS_METRICS",
    "AnalysisSpec",
    "AttData",
    "AugGenSearch",
    "Cifar100Data",
    "Cifar10Data",
    "ClassRef",
    "ClassifierSpec",
    "ClipFilterSpec",
    "DATASET_SPECS",
    "DEVICE_PATTERN",
    "DatasetSpec",
    "DiagnosticsSpec",
    "DigitsData",
    "DomainClassifierSpec",
    "EDMSpec",
    "EDM_DEFAULTS",
    "EmbeddingSpec",
    "FACE_DATASETS",
    "FractionMix",
    "GeneratorSpec",
    "GeneratorTrainSpec",
    "Grid",
    "GridError",
    "IdentityChoice",
    "IdentityFolderData",
    "ImageFolderData",
    "LabelPolicy",
    "LfwData",
    "MARGIN_DEFAULTS",
    "MIXING_KEYS",
    "MarginLoss",
    "MedmnistData",
    "MetricColumn",
    "MixSpec",
    "ModelSpec",
    "NAME_PATTERN",
    "NonNegativeInt",
    "NpzData",
    "OtherDataset",
    "PairRule",
    "PositiveInt",
    "PretrainedSpec",
    "Probability",
    "PublishedSetting",
    "RESERVED_ARMS",
    "RealSpec",
    "SCHEMA_VERSION",
    "SEARCH_RANGE",
    "SampleSpec",
    "Strategy",
    "Strict",
    "SyntheticSpec",
    "TEXT2IMAGE_OPTIONS",
    "UNET_OPTIONS",
    "check_device",
    "class_index",
    "dataset_identity",
    "dataset_label",
    "is_face",
    "mix_label",
]
