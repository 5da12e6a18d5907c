"""The cells table (`results/<name>/cells.csv` and `.parquet`, DESIGN 3.3): its columns, their dtypes and
meanings, defined once. study.runner.collect writes it, study.analysis.simulate simulates it, and the
equivalence analysis and the report read it through `read_cells` / `upgrade`. Never imports torch.

    from study.table import COLUMNS, conform, read_cells
    df = conform(rows_frame)           # every column, in order, with its dtype (missing ones empty)
    cells = read_cells("results/digits/cells.csv")   # older tables: renamed columns mapped, missing ones empty

Counts are nullable integers (`Int64`: empty where unknown, e.g. for a failed cell whose class count was not
known yet); text columns are strings ("" or empty where they do not apply); metrics and diagnostics are floats
(NaN where a cell has none); identity_disjoint is a nullable boolean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "string" | "Int64" | "float64" | "boolean"
    meaning: str
    required: bool = False  # the equivalence analysis needs it (every table since the first has it)


_COLUMNS = (
    Column("cell", "string", "the cell's label: arm, base, extra or volume, seed", True),
    Column("dataset", "string", "the dataset (the MedMNIST flavor for medmnist)", True),
    Column("seed", "Int64", "the seed: base subset, generator, samples and classifier", True),
    Column("base_per_class", "Int64", "base real images per class", True),
    Column("n_base", "Int64", "base real images in total (base_per_class x n_classes)", True),
    Column("arm", "string", "the arm: real-only, real-extra or a generator arm's name", True),
    Column("arm_kind", "string", "real-only | real-extra | closed | open (what the generator saw)", True),
    Column("strategy", "string", "sampling: conditional, auggen-<pairs>, scoremix-<pairs>; none (real arms)", True),
    Column("mix", "string", "batch mixing of real and synthetic images: uniform | fraction=<p>; none for real arms"),
    Column("extra_per_class", "Int64", "extra real images per class (real-extra arm; 0 otherwise)", True),
    Column("n_extra", "Int64", "extra real images in total", True),
    Column("volume_per_class", "Int64", "synthetic images per class (generator arms; 0 otherwise)", True),
    Column("n_syn", "Int64", "synthetic images in total", True),
    Column("classifier", "string", "the classifier's architecture", True),
    Column("test_acc", "float64", "test accuracy", True),
    Column("test_bacc", "float64", "test balanced accuracy"),
    Column("test_auc", "float64", "test ROC AUC (one-vs-rest macro average for several classes)"),
    Column(
        "test_auc_n",
        "float64",
        "test_auc's effective binomial trials A (1 - A) / Var, Var by Hanley & McNeil "
        "(1982; several classes: the mean one-vs-rest Var / K); empty where A is 0 or 1, or computed before it",
    ),
    Column("test_nll", "float64", "test negative log-likelihood per image"),
    Column("test_ece", "float64", "test expected calibration error"),
    Column("n_test", "Int64", "test images", True),
    Column("status", "string", "done | failed", True),
    Column("error", "string", "a failed cell's error and the path of its traceback", True),
    Column("seconds", "float64", "the classifier's build time"),
    Column("n_classes", "Int64", "classes of the dataset (of the classifier: new-class labels add classes)"),
    Column("gen_train_images", "Int64", "images the generator trained on (empty when unknown, e.g. pretrained)"),
    Column("gen_train_data", "string", "what the generator trained on, e.g. digits:train[100]"),
    Column("cond_acc", "float64", "share of the sample set the reference classifier labels as asked"),
    Column("cell_key", "string", "the classifier artifact's key (shared by cells that train the same classifier)"),
    Column("generator_key", "string", "the generator artifact's key"),
    Column("samples_key", "string", "the sample set's key"),
    Column("labels", "string", "labels of mixed images: new-class | soft | dominant; class (conditional), none (real)"),
    Column("n_pairs", "Int64", "class pairs a mixing strategy sampled"),
    Column("pair_weight_i", "float64", "weight of a pair's class i (AugGen alpha as searched or set; ScoreMix lambda)"),
    Column("pair_weight_j", "float64", "weight of a pair's class j (AugGen beta; ScoreMix 1 - lambda)"),
    Column("pair_distance", "float64", "mean cosine distance of the pairs' class centroids (base classifier)"),
    Column("source_mass", "float64", "the reference classifier's mean probability on a mixed image's two classes"),
    Column("cka", "float64", "linear CKA of the generator's class embeddings and the classifier's class centroids"),
    # Sample-set diagnostics (the `diagnostics` stage, one per sample set and base size; study.sampling.diagnostics).
    Column("mem_frac", "float64", "share of samples that are near-copies of a base image (d1/d2 < 1/3, pixels)"),
    Column("mem_ratio", "float64", "median NN distance to the base / to as many outside-base training images (pixels)"),
    Column("mem_frac_unseen", "float64", "the near-copy test against outside-base images (its false-positive floor)"),
    Column("mem_frac_feat", "float64", "mem_frac in the judge's penultimate features"),
    Column("mem_ratio_feat", "float64", "mem_ratio in the judge's penultimate features"),
    Column("gen_mem_frac", "float64", "a pool-trained generator: near-copies of its own training set (val split held)"),
    Column("gen_mem_ratio", "float64", "its samples' NN distance to its training set / the val images' (Meehan 2020)"),
    Column("fd", "float64", "Frechet distance to a class-balanced pool sample in the judge's features"),
    Column("kd", "float64", "kernel distance (KID's unbiased MMD^2, cubic kernel) in the judge's features"),
    Column("kd_se", "float64", "kd's standard error (first-order U-statistic variance)"),
    Column("precision", "float64", "precision (Kynkaanniemi et al. 2019, k = 3) in the judge's features"),
    Column("recall", "float64", "recall (Kynkaanniemi et al. 2019, k = 3) in the judge's features"),
    Column("density", "float64", "density (Naeem et al. 2020, k = 5) in the judge's features"),
    Column("coverage", "float64", "coverage (Naeem et al. 2020, k = 5) in the judge's features"),
    Column("domain_auc", "float64", "cross-validated AUC of a small CNN telling samples from real images (0.5: none)"),
    Column("cas", "float64", "classification accuracy score: the grid's classifier on base-size synthetic sets alone"),
    Column("fid", "float64", "standard FID (Inception-v3), only with local weights"),
    Column("diagnostics_key", "string", "the sample set's diagnostics artifact at this base"),
    Column("diagnostics_error", "string", "why the diagnostics stage failed (the cell itself is unaffected)"),
    # Face verification (face datasets: study.data.faces, study.verification): the classifier's embeddings scored on
    # pairs of identities it never saw. `<metric>_n` is each metric's noise model, the effective number of binomial
    # trials (pairs for pair accuracy; p (1 - p) / Var from a bootstrap over pairs for AUC, 1 - EER and TAR).
    Column("verif_auc", "float64", "verification ROC AUC (cosine similarity of pair embeddings)"),
    Column("verif_eer", "float64", "equal error rate (FAR = 1 - TAR on the interpolated ROC)"),
    Column("verif_acc", "float64", "pair accuracy, LFW protocol: threshold from the other folds, mean over folds"),
    Column("tar_at_far_1e-1", "float64", "TAR at FAR = 0.1"),
    Column("tar_at_far_1e-2", "float64", "TAR at FAR = 0.01 (empty when below the FAR resolution)"),
    Column("tar_at_far_1e-3", "float64", "TAR at FAR = 0.001 (empty when below the FAR resolution)"),
    Column("verif_auc_n", "float64", "verif_auc's effective binomial trials (bootstrap over pairs)"),
    Column("verif_eer_n", "float64", "1 - verif_eer's effective binomial trials (bootstrap over pairs)"),
    Column("verif_acc_n", "float64", "verif_acc's binomial trials: the number of pairs"),
    Column("tar_at_far_1e-1_n", "float64", "tar_at_far_1e-1's effective binomial trials (bootstrap over pairs)"),
    Column("tar_at_far_1e-2_n", "float64", "tar_at_far_1e-2's effective binomial trials (bootstrap over pairs)"),
    Column("tar_at_far_1e-3_n", "float64", "tar_at_far_1e-3's effective binomial trials (bootstrap over pairs)"),
    Column("verif_acc_se", "float64", "standard error of verif_acc over folds (LFW's +-: sigma / sqrt(folds))"),
    Column("rank1", "float64", "rank-1 identification of probes against a gallery of the verification identities"),
    Column("n_verif_pairs", "Int64", "verification pairs (n_pairs counts a sample set's mixed class pairs)"),
    Column("n_same", "Int64", "same-identity verification pairs"),
    Column("n_different", "Int64", "different-identity verification pairs"),
    Column("far_resolution", "float64", "1 / n_different: the smallest measurable FAR"),
    Column("n_verif_identities", "Int64", "identities the verification pairs are drawn from"),
    Column("identity_disjoint", "boolean", "no training identity is a verification identity (asserted on load)"),
    Column("verif_protocol", "string", "the pairs (file, view, folds) and how pair accuracy chose its threshold"),
)
SCHEMA: dict[str, Column] = {c.name: c for c in _COLUMNS}
COLUMNS: list[str] = list(SCHEMA)
REQUIRED: list[str] = [c.name for c in _COLUMNS if c.required]
# The values read from a cell's metrics.json (study.models.classifier.evaluate on the test split).
TEST_METRIC_COLUMNS: list[str] = COLUMNS[COLUMNS.index("test_acc") : COLUMNS.index("n_test") + 1]
# The values read from a sample set's diagnostics.json (the columns from mem_frac to fid).
DIAGNOSTIC_COLUMNS: list[str] = COLUMNS[COLUMNS.index("mem_frac") : COLUMNS.index("fid") + 1]
# The values read from a face cell's metrics.json (study.models.embedding.verify; its n_pairs is n_verif_pairs).
VERIFICATION_COLUMNS: list[str] = COLUMNS[COLUMNS.index("verif_auc") : COLUMNS.index("verif_protocol") + 1]
# Columns renamed since the first tables: old name -> new name (`upgrade` maps them on read).
RENAMED = {"mix_a": "pair_weight_i", "mix_b": "pair_weight_j"}


class TableError(ValueError):
    """A cells table that cannot be read: names the file, the columns or values and what was expected."""


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Every column of the schema in order with its dtype; columns the frame lacks are empty."""
    out = pd.DataFrame(index=df.index)
    for name, col in SCHEMA.items():
        values = df[name] if name in df.columns else pd.Series(index=df.index, dtype=col.dtype)
        if col.dtype in ("string", "boolean"):
            out[name] = values.astype(col.dtype)
        else:
            out[name] = pd.to_numeric(values, errors="raise").astype(col.dtype)
    return out


def upgrade(df: pd.DataFrame) -> pd.DataFrame:
    """An older table in today's column names: renamed columns mapped, missing optional columns added empty
    (values are left as they are; `conform` sets the dtypes). Columns the schema does not know are kept."""
    out = df.rename(columns={old: new for old, new in RENAMED.items() if old in df.columns and new not in df.columns})
    for name in COLUMNS:
        if name not in out.columns and not SCHEMA[name].required:
            out[name] = pd.Series(index=out.index, dtype=SCHEMA[name].dtype)
    return out


def read_cells(path: str | os.PathLike) -> pd.DataFrame:
    """A cells table (.csv or .parquet), upgraded to today's columns; TableError names missing required columns
    and unexpected status values."""
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"error": "string"})
    df = upgrade(df)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TableError(f"{path}: missing columns {missing} (expected the study.runner.collect table)")
    bad = sorted(set(df["status"].dropna()) - {"done", "failed"})
    if bad or df["status"].isna().any():
        raise TableError(f"{path}: column status: unexpected values {bad or ['(empty)']}; expected 'done' or 'failed'")
    return df
