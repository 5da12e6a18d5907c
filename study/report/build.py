"""Write the study's report: `python -m study.report GRID.yaml | RESULTS_DIR [--out DIR]`.

    python -m study.report grids/quickstart.yaml                  # results/quickstart -> reports/quickstart/
    python -m study.report results/quickstart --out /tmp/report   # a results directory, another output
    python -m study.report grids/cifar.yaml --smoke --results /scratch/results

Reads `results/<name>/cells.csv` (and `plan.json` beside it, for the grid and the artifact store), runs the
equivalence analysis (writing `equivalence.csv` and `equivalence_fit.csv` beside `cells.csv`) and writes
`reports/<name>/report.md` with its PNG figures. It works on an incomplete grid (a banner says what is
missing), on `--smoke` runs and on grids with real arms only. Costs seconds to a minute (the bootstrap);
never imports torch. Exit codes: 0 written; 2 bad input (the message names the file and what was expected).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from study.analysis import equivalence
from study.grid import GridError, deep_merge, load_grid
from study.report import plots
from study.store import CONFIG, DONE, PREVIEW, PROVENANCE, Store, atomic_write_text, read_json

# The range each metric lives in: t intervals are clipped to it.
RANGES = {"test_acc": (0, 1), "test_bacc": (0, 1), "test_auc": (0, 1), "test_nll": (0, np.inf), "test_ece": (0, 1)}
METRICS = {"test_acc": "accuracy", "test_bacc": "balanced acc.", "test_auc": "AUC", "test_nll": "NLL",
           "test_ece": "ECE"}  # fmt: skip
REQUIRED = ["cell", "dataset", "seed", "base_per_class", "arm", "arm_kind", "extra_per_class", "volume_per_class",
            "test_acc", "n_test", "status", "error"]  # fmt: skip
KEYS = ["arm", "arm_kind", "base_per_class", "extra_per_class", "volume_per_class"]
STAGES = ("reference", "generator", "samples", "classifier")
FIGURES = {  # in the order the report shows them
    "accuracy": "fig1_accuracy.png",
    "rate": "fig2_exchange_rate.png",
    "curves": "fig3_equivalence_curves.png",
    "strategies": "fig4_strategies.png",
    "samples": "fig5_samples.png",
    "diagnostics": "fig6_diagnostics.png",
}

# The datasets with published constants (the values live in equivalence.PUBLISHED_C2, SCIENCE.md section 1).
PUBLISHED_NAMES = {"cifar10": "CIFAR-10", "bloodmnist": "BloodMNIST", "imagenet100": "ImageNet-100"}
_DATASET_PATTERNS = {
    "cifar10": re.compile(r"cifar[-_ ]?10(?!\d)", re.I),
    "bloodmnist": re.compile(r"bloodmnist", re.I),
    "imagenet100": re.compile(r"imagenet[-_ ]?100(?!\d)", re.I),
}


class ReportError(ValueError):
    """Bad input to the report: names the file or directory and what was expected."""


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    name: str
    results_dir: Path
    cells: pd.DataFrame  # every row of cells.csv (done and failed)
    plan: dict | None  # plan.json, None when absent
    store: Path | None  # the artifact store, None when not found
    smoke: bool  # the run was a --smoke run (its grid already carries its smoke overrides)


def locate(target: str | Path, results_root: str | Path = "results", smoke: bool = False) -> Results:
    """A grid file (results in `results_root/<name>/`) or a results directory -> the loaded inputs."""
    target = Path(target)
    if target.is_dir():
        results_dir, name = target, None
    elif target.suffix in (".yaml", ".yml") or target.is_file():
        try:
            name = load_grid(target, smoke=smoke).name
        except GridError as exc:
            raise ReportError(str(exc)) from None
        results_dir = Path(results_root) / name
    else:
        raise ReportError(f"{target}: not found; expected a grid file (.yaml) or a results directory with cells.csv")
    csv = results_dir / "cells.csv"
    if not csv.exists():
        hint = f"python -m study.run {target}" if name else "python -m study.run GRID.yaml"
        raise ReportError(f"{csv}: no results table (expected cells.csv; run `{hint}` first)")
    cells = read_cells(csv)
    plan = read_json(results_dir / "plan.json", ReportError)
    name = name or (plan or {}).get("name") or results_dir.name
    return Results(name, results_dir, cells, plan, _find_store(results_dir, plan), _is_smoke(plan))


def read_cells(csv: Path) -> pd.DataFrame:
    df = pd.read_csv(csv, dtype={"error": "string"})
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ReportError(f"{csv}: missing columns {missing} (expected the study.runner.collect table)")
    bad = sorted(set(df["status"]) - {"done", "failed"})
    if bad:
        raise ReportError(f"{csv}: column status: unexpected values {bad}; expected 'done' or 'failed'")
    df["error"] = df["error"].fillna("").astype(str)
    for col in ("extra_per_class", "volume_per_class"):
        df[col] = df[col].fillna(0).astype(int)
    return df


def _find_store(results_dir: Path, plan: dict | None) -> Path | None:
    """plan.json's store path, else `store/` beside the results directory (a results root moved whole)."""
    for candidate in ((plan or {}).get("store"), results_dir.parent / "store"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def _is_smoke(plan: dict | None) -> bool:
    """A smoke run's grid already carries its smoke overrides, so merging them again changes nothing."""
    grid = (plan or {}).get("grid") or {}
    if not grid.get("smoke"):
        return False
    try:
        return deep_merge(grid, grid["smoke"]) == grid
    except GridError:
        return False


# --- summaries (every number with its n and interval) ------------------------------------------------


def t_interval(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean and the t interval of the mean over seeds; no interval from one value."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def summarise(done: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per cell (arm, base, extra, volume) over seeds: n and mean/lo/hi of every metric. With one seed the
    accuracy interval is the Wilson interval of the test set alone (flagged `binomial`)."""
    rows = []
    for key, g in done.groupby(KEYS, sort=True):
        row = dict(zip(KEYS, key, strict=True)) | {"n": len(g), "seeds": ",".join(map(str, sorted(g["seed"])))}
        for metric in METRICS:
            if metric in g:
                mean, lo, hi = t_interval(g[metric], level)
                row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean, *np.clip([lo, hi], *RANGES[metric])
        row["binomial"] = len(g) == 1 and pd.notna(g["n_test"].iloc[0])
        if row["binomial"]:
            n_test = int(g["n_test"].iloc[0])
            lo, hi = proportion_confint(round(row["test_acc"] * n_test), n_test, alpha=1 - level, method="wilson")
            row["test_acc_lo"], row["test_acc_hi"] = lo, hi
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["mean"], out["lo"], out["hi"] = out["test_acc"], out["test_acc_lo"], out["test_acc_hi"]
    return out


def paired_gains(done: pd.DataFrame, level: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy gain of every real-extra and synthetic cell over real-only at the same base and seed.
    Returns (per-seed gains, summary per arm/base/added amount). With one seed the interval is the normal
    approximation of two independent test-set proportions (conservative: the test set is shared)."""
    real = done[done["arm"] == "real-only"].set_index(["base_per_class", "seed"])["test_acc"]
    other = done[done["arm"] != "real-only"].copy()
    other["added_per_class"] = np.where(other["arm"] == "real-extra", other["extra_per_class"],
                                        other["volume_per_class"])  # fmt: skip
    idx = pd.MultiIndex.from_frame(other[["base_per_class", "seed"]])
    other["real_acc"] = real.reindex(idx).to_numpy()
    other = other[other["real_acc"].notna()]
    other["gain"] = other["test_acc"] - other["real_acc"]
    rows = []
    for (arm, kind, base, added), g in other.groupby(["arm", "arm_kind", "base_per_class", "added_per_class"]):
        mean, lo, hi = t_interval(g["gain"], level)
        if len(g) == 1 and pd.notna(g["n_test"].iloc[0]):
            p1, p2, n = g["test_acc"].iloc[0], g["real_acc"].iloc[0], g["n_test"].iloc[0]
            half = stats.norm.ppf(0.5 + level / 2) * np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
            lo, hi = mean - half, mean + half
        rows.append({"arm": arm, "arm_kind": kind, "base_per_class": base, "added_per_class": added, "n": len(g),
                     "mean": mean, "lo": lo, "hi": hi, "binomial": len(g) == 1})  # fmt: skip
    cols = ["arm", "arm_kind", "base_per_class", "added_per_class", "n", "mean", "lo", "hi", "binomial"]
    return other, pd.DataFrame(rows, columns=cols)


# --- formatting --------------------------------------------------------------------------------------


def fmt(x, digits: int = 3, sig: bool = False) -> str:
    """Metrics with fixed decimals; rates and sizes (`sig`) with significant digits; — for missing."""
    if x is None or (isinstance(x, (float, np.floating)) and np.isnan(x)) or x is pd.NA:
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if np.isinf(x):
        return "∞" if x > 0 else "−∞"
    if abs(x) >= 1e5:
        return f"{x:.{digits - 1}e}"
    if sig:
        return f"{x:,.0f}" if abs(x) >= 10**digits else f"{x:#.{digits}g}".rstrip(".")
    return f"{x:.{digits}f}"


def fmt_ci(mean, lo, hi, digits: int = 3, mark: str = "", sig: bool = False) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    text = fmt(mean, digits, sig)
    if lo is not None and hi is not None and (np.isfinite(lo) or np.isfinite(hi)):
        text += f" [{fmt(lo, digits, sig)}, {fmt(hi, digits, sig)}]"
    return text + mark


def md_table(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        text = v if isinstance(v, str) else fmt(v)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def in_arm_order(df: pd.DataFrame, arms: list[str], *then: str) -> pd.DataFrame:
    """Rows sorted by the arms' order (real arms first, then the grid's generator order), then by `then`."""
    if df.empty:
        return df
    rank = {a: i for i, a in enumerate(arms)}
    return df.sort_values(["arm", *then], key=lambda c: c.map(rank) if c.name == "arm" else c, kind="stable")


def _figure(fig, out: Path, key: str, caption: str) -> str:
    plots.save(fig, out / FIGURES[key])
    number = list(FIGURES).index(key) + 1
    return f"![Figure {number}]({FIGURES[key]})\n\n**Figure {number}.** {caption}"


# --- sections ----------------------------------------------------------------------------------------


def banner(res: Results) -> list[str]:
    cells = res.cells
    done, failed = int((cells["status"] == "done").sum()), int((cells["status"] == "failed").sum())
    lines = []
    if res.plan is None:
        lines.append(f"> **Grid size unknown:** no plan.json beside cells.csv, so missing cells cannot be "
                     f"counted; {done} cells done, {failed} failed.")  # fmt: skip
    elif res.plan.get("cells", 0) > len(cells):
        total = res.plan["cells"]
        lines.append(f"> **Incomplete grid:** {total - len(cells)} of {total} cells are missing (not run yet); "
                     f"{done} done, {failed} failed. Everything below uses the {done} done cells only.")  # fmt: skip
    if failed:
        lines.append(f"> **{failed} failed cell{'s' * (failed > 1)}:** listed with the error under "
                     "[Failed cells](#failed-cells) and left out of every number.")  # fmt: skip
    if res.smoke:
        lines.append("> **Smoke run:** a shrunk grid (`--smoke`) that checks the plumbing; its numbers say "
                     "nothing about the science.")  # fmt: skip
    return ["\n>\n".join(lines)] if lines else []


def overview(res: Results, done: pd.DataFrame) -> list[str]:
    grid = (res.plan or {}).get("grid") or {}
    arms = list(dict.fromkeys(res.cells["arm"]))
    kinds = dict(zip(res.cells["arm"], res.cells["arm_kind"], strict=False))
    first = done.iloc[0] if len(done) else res.cells.iloc[0]
    classes = f" ({int(first['n_classes'])} classes)" if _has(first, "n_classes") else ""
    facts = [
        ("dataset", f"{first['dataset']}{classes}"),
        ("classifier", str(first.get("classifier", "—"))),
        ("test images", str(int(first["n_test"])) if pd.notna(first["n_test"]) else "—"),
        ("seeds", ", ".join(map(str, sorted(res.cells["seed"].unique())))),
        ("base per class", ", ".join(map(str, sorted(res.cells["base_per_class"].unique())))),
        ("arms", ", ".join(f"{a} ({kinds[a]}-set generator)" if kinds[a] not in plots.REAL_ARMS else a for a in arms)),
        ("cells", f"{len(done)} done, {int((res.cells['status'] == 'failed').sum())} failed"
                  + (f", {res.plan['cells']} in the grid" if res.plan else "")),
    ]  # fmt: skip
    if grid.get("generators"):
        mixes = dict(zip(res.cells["arm"], res.cells.get("mix", pd.Series(dtype=str)), strict=False))
        facts.append(("mixing", ", ".join(f"{a}: {mixes.get(a, '—')}" for a in grid["generators"])))
    return [md_table(pd.DataFrame(facts, columns=["", "value"]))]


def plural(n, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _has(row, col: str) -> bool:
    return col in row and pd.notna(row[col])


def per_cell_table(summary: pd.DataFrame, level: float) -> list[str]:
    rows = []
    for r in summary.itertuples():
        mark = "†" if r.binomial else ""
        row = {"arm": r.arm, "base/class": r.base_per_class, "extra/class": r.extra_per_class or "",
               "synthetic/class": r.volume_per_class or "", "n": r.n}  # fmt: skip
        for metric, label in METRICS.items():
            if metric in summary and summary[metric].notna().any():
                m = getattr(r, metric)
                row[label] = fmt_ci(m, getattr(r, f"{metric}_lo"), getattr(r, f"{metric}_hi"),
                                    mark=mark if metric == "test_acc" else "")  # fmt: skip
        rows.append(row)
    note = (f"Means over seeds (n = seeds done) with {level:.0%} t intervals over seeds. "
            "† one seed: the interval is the test set's Wilson binomial interval and leaves out seed variance.")  # fmt: skip
    return [note, md_table(pd.DataFrame(rows))]


def failed_cells(cells: pd.DataFrame) -> list[str]:
    failed = cells[cells["status"] == "failed"]
    if failed.empty:
        return ["No cell failed."]
    table = failed[["cell", "error"]].copy()
    table["error"] = table["error"].map(lambda e: f"`{e.strip()}`" if e.strip() else "(no error recorded)")
    return [f"{len(failed)} cell{'s' * (len(failed) > 1)} failed; none is used in any number above.", md_table(table)]


def published_match(res: Results) -> tuple[str, str] | None:
    """(dataset key of equivalence.PUBLISHED_C2, the text it was matched in) or None: the dataset column first, then the
    grid's name and dataset options (an npz or image folder named after the dataset)."""
    grid = (res.plan or {}).get("grid") or {}
    texts = [*map(str, res.cells["dataset"].dropna().unique()), res.name, grid.get("name", "")]
    texts += [str(v) for v in (grid.get("dataset") or {}).values() if isinstance(v, str)]
    for text in texts:
        for key, pattern in _DATASET_PATTERNS.items():
            if pattern.search(text):
                return key, text
    return None


# --- provenance --------------------------------------------------------------------------------------


def referenced_keys(cells: pd.DataFrame, store: Path) -> dict[str, set[str]]:
    """The artifacts this grid's cells reference: classifier (cell_key), samples, generator, and the
    reference classifier named in the sample sets' config.json."""

    def keys(col: str) -> set[str]:
        return {str(k) for k in cells[col].dropna()} if col in cells else set()

    out = {"classifier": keys("cell_key"), "samples": keys("samples_key"), "generator": keys("generator_key")}
    out["reference"] = set()
    for key in out["samples"]:
        d = Store(store).find("samples", key)
        config = read_json(d / CONFIG, ReportError) if d else None
        if config and config.get("reference"):
            out["reference"].add(config["reference"])
    return out


def provenance_section(res: Results) -> list[str]:
    if res.store is None:
        return ["No artifact store found (plan.json names none, and there is no `store/` beside the results "
                "directory), so provenance and compute time are unknown."]  # fmt: skip
    refs = referenced_keys(res.cells, res.store)
    rows, records = [], []
    for stage in STAGES:
        seconds, found, devices = 0.0, 0, set()
        for key in sorted(refs[stage]):
            d = Store(res.store).find(stage, key)
            done = read_json(d / DONE, ReportError) if d else None
            if done is None:
                continue
            prov = read_json(d / PROVENANCE, ReportError) or {}
            found += 1
            seconds += float(done.get("seconds") or 0.0)
            devices.add(str(prov.get("device", "?")))
            records.append(prov)
        if refs[stage]:
            rows.append({"stage": stage, "artifacts referenced": len(refs[stage]), "done in store": found,
                         "compute (s)": f"{seconds:,.1f}", "compute (h)": f"{seconds / 3600:.2f}",
                         "device": ", ".join(sorted(devices)) or "—"})  # fmt: skip
    lines = [f"Artifact store: `{res.store}`. Compute time is the build time recorded in `done.json` of each "
             "distinct artifact this grid's cells reference (classifiers by `cell_key`, sample sets, generators, "
             "and the reference classifier the sample sets name), each counted once however many cells share it; "
             "failed attempts and time spent waiting are not counted.", md_table(pd.DataFrame(rows))]  # fmt: skip
    lines += _versions(records)
    return lines


def _versions(records: list[dict]) -> list[str]:
    if not records:
        return ["No provenance records found for the referenced artifacts."]
    commits: dict[str, int] = {}
    for p in records:
        label = f"`{str(p.get('git_commit') or 'unknown')[:12]}`" + (" (dirty tree)" if p.get("git_dirty") else "")
        commits[label] = commits.get(label, 0) + 1
    hosts = sorted({str(p.get("host")) for p in records if p.get("host")})
    lines = ["Git commit(s): " + "; ".join(f"{c}: {n} artifact{'s' * (n > 1)}" for c, n in commits.items()) + ".",
             f"Hosts: {', '.join(hosts) or 'unknown'}."]  # fmt: skip
    packages: dict[str, set[str]] = {}
    for p in records:
        for name, version in (p.get("packages") or {}).items():
            packages.setdefault(name, set()).add(str(version))
    if packages:
        table = pd.DataFrame([(n, ", ".join(sorted(v))) for n, v in sorted(packages.items())],
                             columns=["package", "version(s)"])  # fmt: skip
        lines.append(md_table(table))
    return lines


# --- figures that need only the cells table ----------------------------------------------------------


def sample_previews(res: Results, done: pd.DataFrame) -> pd.DataFrame:
    """One preview.png per (arm, base), from the lowest seed's sample set. Arms that share their sample sets
    (they differ only in how the samples are mixed into batches) become one row labelled with all of them."""
    cols = ["arm", "label", "base_per_class", "seed", "path"]
    if res.store is None or "samples_key" not in done:
        return pd.DataFrame(columns=cols)
    syn = done[done["samples_key"].notna()].sort_values("seed")
    rows = []
    for (arm, base), g in syn.groupby(["arm", "base_per_class"], sort=False):
        for r in g.itertuples():
            d = Store(res.store).find("samples", str(r.samples_key))
            if d is not None and (d / PREVIEW).exists():
                rows.append({"arm": arm, "base_per_class": base, "seed": r.seed, "key": r.samples_key,
                             "path": d / PREVIEW})  # fmt: skip
                break
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    signature = df.groupby("arm", sort=False)["key"].agg(lambda k: tuple(sorted(k)))
    names = signature.groupby(signature, sort=False).transform(lambda s: " = ".join(s.index))
    df["label"] = df["arm"].map(names)
    return df.drop_duplicates(["label", "base_per_class"])[cols]


def diagnostics(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One point per (arm, sample set): its cond_acc and the mean gain of the cells trained on it. The
    volumes of one arm, base and seed share a sample set (and so one diagnostic value)."""
    cols = ["arm", "base_per_class", "seed", "diagnostic", "gain", "n_cells"]
    if "cond_acc" not in per_seed:
        return pd.DataFrame(columns=cols)
    pts = per_seed[per_seed["arm_kind"].isin(["closed", "open"]) & per_seed["cond_acc"].notna()]
    keys = ["arm", "base_per_class", "seed", "samples_key" if "samples_key" in pts else "cond_acc"]
    out = pts.groupby(keys, dropna=False).agg(diagnostic=("cond_acc", "first"), gain=("gain", "mean"),
                                             n_cells=("gain", "size")).reset_index()  # fmt: skip
    return out[cols]


def spearman_rows(points: pd.DataFrame, level: float) -> pd.DataFrame:
    """Spearman's rho per arm (and pooled) with a Fisher-z interval (se 1.03/sqrt(n-3), Fieller et al. 1957)."""
    rows = []
    groups = [(a, g) for a, g in points.groupby("arm", sort=False)]
    groups += [("all arms", points)] if points["arm"].nunique() > 1 else []
    for arm, g in groups:
        n = len(g)
        if n < 4 or g["diagnostic"].nunique() < 2 or g["gain"].nunique() < 2:
            rows.append({"arm": arm, "n sample sets": n, "Spearman ρ": "— (too few distinct points)"})
            continue
        rho = stats.spearmanr(g["diagnostic"], g["gain"]).statistic
        half = stats.norm.ppf(0.5 + level / 2) * 1.03 / np.sqrt(n - 3)
        lo, hi = np.tanh(np.arctanh(np.clip(rho, -0.999, 0.999)) + np.array([-half, half]))
        rows.append({"arm": arm, "n sample sets": n, "Spearman ρ": fmt_ci(rho, lo, hi, 2)})
    return pd.DataFrame(rows)


# --- the report --------------------------------------------------------------------------------------


def write_report(res: Results, out: str | Path, n_boot: int = 1000, level: float = 0.9, seed: int = 0) -> Path:
    """Run the analysis, draw the figures and write `out/report.md`; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURES.values():  # a figure this run cannot draw must not survive from an earlier run
        (out / name).unlink(missing_ok=True)
    done = res.cells[res.cells["status"] == "done"].copy()
    arms = list(dict.fromkeys([a for a in plots.REAL_ARMS if a in set(res.cells["arm"])] + list(res.cells["arm"])))
    palette = plots.arm_palette(arms)
    kinds = dict(zip(res.cells["arm"], res.cells["arm_kind"], strict=False))
    summary = in_arm_order(summarise(done, level), arms, *KEYS[2:])
    per_seed, gains = paired_gains(done, level)
    gains = in_arm_order(gains, arms, "base_per_class", "added_per_class")
    eq, eq_error = _analyse(res, done, n_boot, level, seed)
    synthetic = [a for a in arms if kinds[a] in ("closed", "open")]
    n_classes = n_classes_of(res.cells)

    md = [f"# Report: {res.name}", f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
          f"`python -m study.report` from `{res.results_dir}/cells.csv`.", *banner(res), *overview(res, done)]  # fmt: skip
    if done.empty:
        md += ["No cell is done yet: nothing to analyse.", "## Failed cells", *failed_cells(res.cells),
               "## Provenance", *provenance_section(res)]  # fmt: skip
        return _write(out, md)
    md += ["## Headline", *headline(eq, eq_error, synthetic, level)]
    md += ["## Accuracy vs training-set size", *accuracy_section(done, summary, palette, eq, n_classes, out, level)]
    if synthetic:
        md += [
            "## Exchange rate: synthetic images per real image",
            *rate_section(eq, eq_error, palette, kinds, out, level),
        ]
        md += [
            "## Equivalence curves and the closed form",
            *closed_form_section(res, eq, eq_error, palette, kinds, n_classes, out),
        ]
        md += ["## Strategy comparison", *strategy_section(gains, palette, kinds, out, level)]
        md += strategy_diagnostics(in_arm_order(done, arms), level)
        md += ["## Synthetic samples", *samples_section(res, done, palette, n_classes, out)]
        md += ["## Generator diagnostics vs downstream gain", *diagnostics_section(per_seed, palette, out, level)]
    md += ["## Per-cell results", *per_cell_table(summary, level)]
    md += ["## Failed cells", *failed_cells(res.cells)]
    md += ["## Provenance", *provenance_section(res)]
    md += ["## Methods", *methods(eq, level, n_boot, bool(synthetic))]
    return _write(out, md)


def n_classes_of(cells: pd.DataFrame) -> int:
    """From the n_classes column, else n_base / base_per_class (tables written before the column existed)."""
    for ratio in (cells.get("n_classes"), cells.get("n_base", pd.Series(dtype=float)) / cells["base_per_class"]):
        if ratio is not None and ratio.notna().any():
            return int(round(ratio.dropna().iloc[0]))
    raise ReportError("cells.csv: neither n_classes nor n_base is filled in any row; cannot tell the class count")


def _write(out: Path, md: list[str]) -> Path:
    path = out / "report.md"
    atomic_write_text(path, "\n\n".join(md).rstrip() + "\n")
    return path


def _analyse(res: Results, done: pd.DataFrame, n_boot: int, level: float, seed: int):
    """The equivalence analysis and its tables beside cells.csv; a reduced grid (one base size, no real
    curve, real arms only) gives the reason instead, and the report goes on without it."""
    if done.empty:
        return None, "no cell is done"
    # Numerical warnings (perfect separation on tiny grids, ...) are summarised under Methods, not printed.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            eq = equivalence.analyse(res.cells, n_boot=n_boot, level=level, seed=seed)
        except equivalence.EquivalenceError as exc:
            return None, str(exc)
    kinds = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    if kinds:
        eq.notes.append(f"the fits raised {len(caught)} numerical warnings ({'; '.join(kinds[:3])}"
                        f"{'; …' if len(kinds) > 3 else ''}); treat estimates from very small grids with care")  # fmt: skip
    equivalence.write_tables(eq, res.results_dir)
    return eq, None


# --- sections that need the equivalence analysis -----------------------------------------------------
# Everything that reads `equivalence.Equivalence` goes through these functions.


def headline(eq, eq_error: str | None, synthetic: list[str], level: float) -> list[str]:
    if not synthetic:
        return ["This grid has real arms only: there is no exchange rate to estimate. The learning curve and "
                "the per-cell table below are the result."]  # fmt: skip
    if eq is None:
        return [f"The equivalence analysis could not run: {eq_error}."]
    fit = eq.fit.set_index("arm") if len(eq.fit) else pd.DataFrame()
    lines = []
    for arm in synthetic:
        if arm not in fit.index:
            lines.append(f"- **{arm}**: no done cells to fit.")
            continue
        r = fit.loc[arm]
        beta = fmt_ci(r["beta"], r["beta_lo"], r["beta_hi"], sig=True)
        cells = f"{plural(r['n_done'], 'synthetic cell')}, {plural(r['n_seeds'], 'seed')}"
        n = f"joint model on this arm's {cells.replace(', ', ' (', 1)}) and the real cells"
        n += f", {level:.0%} likelihood-ratio interval"
        if r["verdict"] == "gain":
            text = (f"**k = {fmt_ci(r['k'], r['k_lo'], r['k_hi'], sig=True)} synthetic images per real image** "
                    f"(β = {beta} real images per synthetic image)")  # fmt: skip
        elif r["verdict"] in ("hurts", "no measurable gain"):
            text = f"**{r['verdict']}**: β = {beta} real images per synthetic image, so k is not defined"
        else:
            text, n = f"**not estimable**: {r['reason'] or 'see Methods'}", cells
        lines.append(f"- **{arm}**: {text}; {n}.")
    return ["\n".join(lines), "β is the signed exchange rate (n_eff − n_base) / n_syn, real images gained per "
            "synthetic image; k = 1/β is reported only where β's interval excludes zero. Estimates per base size "
            "and per synthetic volume, and the paper's closed form, follow."]  # fmt: skip


def _real_curve(eq):
    """The fitted real learning curve (acc of total real images), or None (no fit, or several datasets)."""
    if eq is None:
        return None
    try:
        curve = eq.curve
    except ValueError:  # several (dataset, classifier) curves in one table: no single curve to draw
        return None
    return None if curve is None else curve.acc


def accuracy_section(done, summary, palette, eq, n_classes, out: Path, level: float) -> list[str]:
    curve = _real_curve(eq)
    fig = plots.accuracy_vs_size(done, summary, palette, n_classes, curve=curve, level=level)
    synthetic = done["arm_kind"].isin(["closed", "open"]).any()
    caption = ("Test accuracy vs training images per class. Black and grey: real data only (real-only at each base; "
               "real-extra = a base plus extra real images)"
               + ("; coloured: a base plus synthetic images, one line per base (light = small base) leaving the real "
                  "curve at its base" if synthetic else "")
               + f". Small points are seeds, large points means with {level:.0%} t intervals over seeds"
               + ("; dashed: the fitted real learning curve." if curve else "."))  # fmt: skip
    return [_figure(fig, out, "accuracy", caption)]


def rate_section(eq, eq_error, palette, kinds, out: Path, level: float) -> list[str]:
    if eq is None or eq.equivalence.empty:
        return [f"Not available: {eq_error or 'no synthetic cells are done'}."]
    lines = []
    by_base = eq.fit_by_base
    if len(by_base) and by_base["beta"].notna().any():
        fig = plots.exchange_rate(by_base, eq.equivalence, palette, kinds, joint=eq.fit, level=level)
        caption = ("Left: β, real images gained per synthetic image, per base size (joint model fitted at that "
                   f"base, {level:.0%} likelihood-ratio intervals) and over all bases (right-most point); small faint "
                   "points are the single volumes. 0 = no gain, 1 = a synthetic image is worth a real one. Right: "
                   "k = 1/β synthetic images per real image, drawn only where β's interval excludes zero.")  # fmt: skip
        lines.append(_figure(fig, out, "rate", caption))
        lines += ["Per arm and base size (the joint model fitted on the real cells and this arm's cells at that base):",
                  md_table(_by_base_table(by_base, list(palette)))]  # fmt: skip
    elif len(by_base):
        reasons = "; ".join(sorted(set(by_base["reason"].fillna("")) - {""})) or "see the table below"
        lines.append(f"β is not estimable at any base size ({reasons}), so there is no exchange-rate figure.")
    lines += ["Per synthetic cell, seeds pooled (n_eff: the real training-set size with the same accuracy on the "
              f"fitted real curve; β with its delta-method {level:.0%} interval and, beside it, the bootstrap "
              "percentile interval):", md_table(_per_volume_table(eq.equivalence, list(palette)))]  # fmt: skip
    return lines


def _by_base_table(by_base: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    rows = []
    for r in in_arm_order(by_base, arms, "base_per_class").itertuples():
        rows.append({"arm": r.arm, "base/class": int(r.base_per_class), "n seeds": r.n_seeds,
                     "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True),
                     "k": fmt_ci(r.k, r.k_lo, r.k_hi, sig=True) if r.verdict == "gain" else "—",
                     "verdict": _with_reason(r.verdict, r.reason)})  # fmt: skip
    return pd.DataFrame(rows)


def _with_reason(verdict: str, reason) -> str:
    return verdict + (f" ({reason})" if isinstance(reason, str) and reason else "")


def _interval(lo, hi) -> str:
    return f"[{fmt(lo, sig=True)}, {fmt(hi, sig=True)}]" if np.isfinite(lo) and np.isfinite(hi) else "—"


def _per_volume_table(e: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    rows = []
    for r in in_arm_order(e, arms, "base_per_class", "volume_per_class").itertuples():
        rows.append({"arm": r.arm, "base/class": int(r.base_per_class), "synthetic/class": int(r.volume_per_class),
                     "n seeds": r.n_seeds, "n_eff (images)": fmt_ci(r.n_eff, r.n_eff_lo, r.n_eff_hi, sig=True),
                     "β": fmt_ci(r.beta, r.beta_lo, r.beta_hi, sig=True),
                     "β bootstrap": _interval(r.beta_lo_boot, r.beta_hi_boot),
                     "k": fmt_ci(r.k, r.k_lo, r.k_hi, sig=True) if r.verdict == "gain" else "—",
                     "verdict": _with_reason(r.verdict, r.reason)})  # fmt: skip
    return pd.DataFrame(rows)


def closed_form_section(res: Results, eq, eq_error, palette, kinds, n_classes: int, out: Path) -> list[str]:
    if eq is None or eq.fit.empty:
        return [f"Not available: {eq_error or 'no synthetic cells are done'}."]
    lines = []
    pts = eq.closed_form
    if len(pts):
        pts = pts.assign(real_plus_per_class=pts["n_real_plus"] / n_classes,
                         syn_per_class=pts["n_syn_star"] / n_classes)  # fmt: skip
        reached = pts[pts["status"] == "ok"]
        if len(reached):
            fig = plots.equivalence_curves(reached, palette, curve=_closed_form_curve(eq, n_classes))
            caption = ("Synthetic images per class needed to match the accuracy of adding real images per class, per "
                       "base size (shade: light = small base). Points: monotone interpolation of the seed-pooled "
                       "accuracies in log n_syn; lines: the fitted closed form "
                       "n_syn/n_base = c1^(n_base/K)·(c2^(n_real+/n_base) − 1); dotted: one synthetic image per real "
                       "image.")  # fmt: skip
            lines.append(_figure(fig, out, "curves", caption))
        missed = pts[pts["status"] != "ok"]
        if len(missed):
            counts = ", ".join(f"{n} {s}" for s, n in missed["status"].value_counts().items())
            lines.append(f"{len(missed)} of {len(pts)} (arm, base, real added) targets lie outside the accuracies the "
                         f"tested synthetic volumes reached ({counts}); they are not drawn and not fitted.")  # fmt: skip
    else:
        lines.append("No closed-form points: the closed form needs real-extra cells and synthetic cells at the same "
                     "base.")  # fmt: skip
    return [*lines, *constants_table(res, eq, kinds)]


def _closed_form_curve(eq, n_classes: int):
    def curve(arm: str, base: int, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(eq.closed_form_curve(arm, base, x * n_classes), dtype=float) / n_classes
        except ValueError:  # the arm is not in the fit table (no fit): draw points only
            return np.full_like(x, np.nan, dtype=float)

    return curve


def published_c2(match: tuple[str, str] | None, kind: str) -> str:
    if match is None:
        return "—"
    rows = equivalence.PUBLISHED_C2
    row = rows[(rows["key"] == match[0]) & (rows["arm_kind"] == kind)]
    return f"{row['c2'].iloc[0]:g} ({row['generator'].iloc[0]})" if len(row) else "— (no such generator)"


def constants_table(res: Results, eq, kinds) -> list[str]:
    match = published_match(res)
    published_header = "published c2" + (f" ({PUBLISHED_NAMES[match[0]]})" if match else "")
    rows = []
    for r in in_arm_order(eq.fit, list(kinds)).itertuples():
        note = r.closed_form_reason if isinstance(r.closed_form_reason, str) else ""
        rows.append({"arm": r.arm, "kind": r.arm_kind, "n points": r.closed_form_points,
                     "c1": fmt_ci(r.c1, r.c1_lo, r.c1_hi, sig=True), "c2": fmt_ci(r.c2, r.c2_lo, r.c2_hi, sig=True),
                     "K": f"{fmt(r.K, 3, sig=True)} (fixed)" if np.isfinite(r.K) else "—",
                     "interval": r.closed_form_interval or "—",
                     published_header: published_c2(match, r.arm_kind),
                     "note": note})  # fmt: skip
    source = (f"Published c2: Wang et al. 2025 (arXiv 2508.09550) via `SCIENCE.md`, from a secondary source, so "
              f"approximate; this dataset was matched to {PUBLISHED_NAMES[match[0]]} by '{match[1]}'." if match else
              "No published constants for this dataset (the source paper covers CIFAR-10, BloodMNIST and "
              "ImageNet-100).")  # fmt: skip
    return ["Fitted closed-form constants per arm (n points: the n_syn* points fitted; K is fixed to the number of "
            "classes because only ln(c1)/K is identifiable):", md_table(pd.DataFrame(rows)), source]  # fmt: skip


def strategy_section(gains: pd.DataFrame, palette, kinds, out: Path, level: float) -> list[str]:
    if not (gains["arm_kind"] != "real-extra").any():
        return ["Not available: no synthetic cell has a real-only partner (same base and seed)."]
    fig = plots.strategy_gains(gains, palette, kinds, level)
    caption = (f"Accuracy gain over real-only at the same base, paired by seed, {level:.0%} intervals; real-extra "
               "(grey line) adds the same number of real images per class instead.")  # fmt: skip
    table = pd.DataFrame({
        "arm": gains["arm"], "base/class": gains["base_per_class"], "added/class": gains["added_per_class"],
        "n pairs": gains["n"],
        "gain": [fmt_ci(m, lo, hi, mark="†" if b else "") for m, lo, hi, b in
                 zip(gains["mean"], gains["lo"], gains["hi"], gains["binomial"], strict=True)],
    })  # fmt: skip
    lines = [_figure(fig, out, "strategies", caption), md_table(table)]
    if gains["binomial"].any():
        lines.append("† one seed: normal interval of two test-set proportions (no seed variance).")
    return lines


# Sample-set diagnostics of the strategies (study.runner.collect): one value per sample set, shared by its volumes.
_STRATEGY_DIAGNOSTICS = {"mix_a": "weight i", "mix_b": "weight j", "pair_distance": "pair distance",
                         "source_mass": "source mass", "cka": "CKA"}  # fmt: skip


def strategy_diagnostics(done: pd.DataFrame, level: float) -> list[str]:
    """Per synthetic arm: its strategy, label policy and the mean of each sample-set diagnostic over its sample
    sets (t intervals), when the table has them (older tables do not)."""
    cols = [c for c in _STRATEGY_DIAGNOSTICS if c in done]
    if not cols or "samples_key" not in done or not done[cols].notna().any().any():
        return []
    sets = done[done["samples_key"].notna()].drop_duplicates(["arm", "samples_key"])
    rows = []
    for arm, g in sets.groupby("arm", sort=False):
        row = {"arm": arm, "strategy": g["strategy"].iloc[0], "labels": g.get("labels", pd.Series(["—"])).iloc[0],
               "n sets": len(g)}  # fmt: skip
        for col in cols:
            row[_STRATEGY_DIAGNOSTICS[col]] = fmt_ci(*t_interval(g[col], level))
        rows.append(row)
    note = ("Sample-set diagnostics (mean over sample sets, one per base and seed; "
            f"{level:.0%} t intervals). weight i, j: the mixing weights of a pair's classes (AugGen's alpha, beta "
            "as searched or set; ScoreMix's lambda, 1 − lambda). pair distance: mean cosine distance of the pairs' "
            "class centroids in the real-only classifier's space. source mass: the reference classifier's mean "
            "probability on a mixed image's two source classes (2/K by chance). CKA: linear CKA of the generator's "
            "class embeddings and the real-only classifier's class centroids (ScoreMix reports ≈ 0.35 for faces; "
            "with K classes as items, small K biases it upwards).")  # fmt: skip
    return [note, md_table(pd.DataFrame(rows))]


def samples_section(res: Results, done: pd.DataFrame, palette, n_classes: int, out: Path) -> list[str]:
    previews = sample_previews(res, done)
    if previews.empty:
        why = "no artifact store found" if res.store is None else "no done sample set has a preview.png"
        return [f"Not available: {why}."]
    fig = plots.sample_grids(previews, palette, n_classes)
    seeds = ", ".join(map(str, sorted(previews["seed"].unique())))
    caption = (f"Synthetic samples from each arm's sample set (seed {seeds}; the lowest seed done), one row per class, "
               "per base size. Arms joined by '=' share one sample set (they differ only in how samples are mixed "
               "into classifier batches or labelled).")  # fmt: skip
    return [_figure(fig, out, "samples", caption)]


def diagnostics_section(per_seed: pd.DataFrame, palette, out: Path, level: float) -> list[str]:
    points = diagnostics(per_seed)
    if points.empty:
        return ["Not available: no done synthetic cell carries a generator diagnostic (cond_acc)."]
    fig = plots.diagnostics_vs_gain(points, palette)
    caption = ("Conditional accuracy of each sample set (the share of its samples a reference classifier trained on "
               "the whole real pool labels as their class) vs the accuracy gain over real-only of the cells trained "
               "on it (same base and seed), averaged over the set's volumes.")  # fmt: skip
    return [_figure(fig, out, "diagnostics", caption), f"Rank correlation ({level:.0%} Fisher-z intervals):",
            md_table(spearman_rows(points, level))]  # fmt: skip


def methods(eq, level: float, n_boot: int, synthetic: bool = True) -> list[str]:
    lines = [
        f"- Intervals are {level:.0%} throughout. Per-cell means: t intervals over seeds, clipped to the metric's "
        "range. Gains over real-only: paired by seed (same base subset), t intervals over seeds.",
        "- A real-extra cell with base b and e extra images trains the same classifier as the real-only cell with "
        "base b + e (nested subsets), so their rows repeat the same numbers.",
    ]  # fmt: skip
    if synthetic:
        bootstrap = (f"and bootstrap percentile intervals ({n_boot} replicates) beside them" if n_boot
                     else "no bootstrap (`--n-boot 0`)")  # fmt: skip
        lines.append(
            "- Exchange rates: `study.equivalence` (its module docstring has the formulas). Per synthetic cell: seeds "
            "pooled, n_eff from the inverted real learning curve, delta-method intervals with a quasi-binomial "
            f"dispersion, {bootstrap}. Per arm and per base: the joint model logit p = a + b·log(n_real + β·n_syn), "
            "β by profile likelihood with a likelihood-ratio interval. Failed cells are left out of every fit."
        )
    curve = None
    if eq is not None:
        with contextlib.suppress(ValueError):
            curve = eq.curve
    if curve is not None:
        lines.append(f"- Real learning curve ({curve.dataset}, {curve.classifier}): `{curve.model}`, {curve.reason}; "
                     f"dispersion φ = {curve.dispersion:.2f}, {len(curve.points)} real cells.")  # fmt: skip
    if eq is not None:
        lines += [f"- {note}" for note in eq.notes]
    out = ["\n".join(lines)]
    if curve is not None and len(curve.goodness):
        out += ["Goodness of fit of the real learning curve (lof: lack-of-fit F test against one mean per size; the "
                "power law is fitted beside the GLM with 4 or more sizes):", md_table(curve.goodness)]  # fmt: skip
    return out


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m study.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("target", help="grid file (YAML) or results directory (results/<name>/ with cells.csv)")
    p.add_argument("--out", help="output directory (default reports/<name>/)")
    p.add_argument("--results", default="results", help="results root for a grid file (default results/)")
    p.add_argument("--smoke", action="store_true", help="with a grid file: apply its `smoke:` block (for the name)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: delta-method intervals only)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    if not 0 < args.level < 1:
        p.error(f"--level: expected a number between 0 and 1, got {args.level}")
    if args.n_boot < 0:
        p.error(f"--n-boot: expected a count >= 0, got {args.n_boot}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        res = locate(args.target, args.results, args.smoke)
        path = write_report(res, args.out or Path("reports") / res.name, args.n_boot, args.level, args.seed)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
