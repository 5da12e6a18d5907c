"""The report's reads of the artifact store: provenance and compute time of the artifacts a grid's cells
reference, and the sample sets' preview images. Never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.report.inputs import ReportError, Results
from study.report.markdown import md_table
from study.store import CONFIG, DONE, PREVIEW, PROVENANCE, Store, read_json

STAGES = ("reference", "generator", "samples", "classifier", "diagnostics")


def referenced_keys(cells: pd.DataFrame, store: Path) -> dict[str, set[str]]:
    """The artifacts this grid's cells reference: classifier (cell_key), samples, generator, and the
    reference classifier named in the sample sets' config.json."""

    def keys(col: str) -> set[str]:
        return {str(k) for k in cells[col].dropna()} if col in cells else set()

    out = {"classifier": keys("cell_key"), "samples": keys("samples_key"), "generator": keys("generator_key"),
           "diagnostics": keys("diagnostics_key")}  # fmt: skip
    out["reference"] = set()
    for key in out["samples"]:
        d = Store(store).find("samples", key)
        config = read_json(d / CONFIG, ReportError) if d else None
        if config and config.get("reference"):
            out["reference"].add(config["reference"])
    return out


def build_seconds(store: Path, stage: str, key: str) -> tuple[float, float] | None:
    """(wall, CPU) seconds done.json records for an artifact's build, CPU NaN where it was not recorded (stores
    written before it was); None when the artifact is not (yet) in the store."""
    d = Store(store).find(stage, key)
    done = read_json(d / DONE, ReportError) if d else None
    if done is None:
        return None
    return float(done.get("seconds") or 0.0), float(done.get("cpu_seconds", float("nan")))


def provenance_section(res: Results) -> list[str]:
    if res.store is None:
        return ["No artifact store found (plan.json names none, and there is no `store/` beside the results "
                "directory), so provenance and compute time are unknown."]  # fmt: skip
    refs = referenced_keys(res.cells, res.store)
    rows, records = [], []
    for stage in STAGES:
        seconds, cpu, found, devices = 0.0, 0.0, 0, set()
        for key in sorted(refs[stage]):
            d = Store(res.store).find(stage, key)
            built = build_seconds(res.store, stage, key)
            if built is None:
                continue
            prov = read_json(d / PROVENANCE, ReportError) or {}
            found += 1
            seconds, cpu = seconds + built[0], cpu + built[1]
            devices.add(str(prov.get("device", "?")))
            records.append(prov)
        if refs[stage]:
            rows.append({"stage": stage, "artifacts referenced": len(refs[stage]), "done in store": found,
                         "compute (s)": f"{seconds:,.1f}", "compute (h)": f"{seconds / 3600:.2f}",
                         "CPU (h)": f"{cpu / 3600:.2f}" if found and cpu == cpu else "—",
                         "device": ", ".join(sorted(devices)) or "—"})  # fmt: skip
    lines = [f"Artifact store: `{res.store}`. Compute time is the build time recorded in `done.json` of each "
             "distinct artifact this grid's cells reference (classifiers by `cell_key`, sample sets, generators, "
             "and the reference classifier the sample sets name), each counted once however many cells share it; "
             "failed attempts and time spent waiting are not counted. CPU is the builds' process CPU time (every "
             "thread), the cost on a shared machine; — where a build did not record it.", md_table(pd.DataFrame(rows))]  # fmt: skip
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
