"""Tables and figures of the generator-quality runs (study.bench.quality) and the peer comparison
(study.bench.peer) for reports/bench.md: quality vs CPU-minutes, one line per recipe, per case."""

from __future__ import annotations

from pathlib import Path

CASE_TITLES = {
    "digits": "digits 8 px (20 per class)",
    "digits16": "digits 16 px (20 per class)",
    "cifar16": "CIFAR-10 16 px (10,000-image pool)",
    "cifar32": "CIFAR-10 32 px (10,000-image pool)",
    "breast28": "BreastMNIST 28 px (546-image pool)",
}


def label_runs(runs: list[dict], named: dict[str, dict] | None = None) -> list[dict]:
    """Each run with a `label`: its recipe name, made unique where one name stands for different recipes
    (`today` follows the shipped grid, so an earlier `today` run trained another recipe): `today#<hash>`, plus
    `= <name>` where the recipe equals a named one (`named`: name -> recipe identity), i.e. a replicate run."""
    from study.keys import key_of

    recipes_by_name: dict[str, set[str]] = {}
    for run in runs:
        recipes_by_name.setdefault(run["recipe_name"], set()).add(key_of(run["recipe"]))
    same = {key_of(recipe): name for name, recipe in (named or {}).items()}
    labelled = []
    for run in runs:
        key, name = key_of(run["recipe"]), run["recipe_name"]
        label = f"{name}#{key[:6]}" if len(recipes_by_name[name]) > 1 else name
        if same.get(key, name) != name:
            label += f" (= {same[key]})"
        labelled.append({**run, "label": label})
    return labelled


def curve_lines(runs: list[dict]) -> dict[str, list[dict]]:
    """recipe (and extra EMA) -> its evaluations in CPU-minute order."""
    lines = {}
    for run in runs:
        for ema, points in run["points"].items():
            label = run.get("label", run["recipe_name"])
            lines[label if ema == "ema" else f"{label} [{ema}]"] = points
    return lines


def plot_case(case: str, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, points in sorted(curve_lines(runs).items()):
        x = [p["cpu_minutes"] for p in points]
        style = "--" if "[" in label else "-"
        left.plot(x, [p["cond_acc_rel"] for p in points], style, marker="o", ms=3, label=label)
        right.plot(x, [p["fd"] for p in points], style, marker="o", ms=3, label=label)
    judge = runs[0]["judge_test_acc"]
    left.set(xlabel="training CPU-minutes (shared machine)", ylabel=f"cond. accuracy / judge ({judge:.3f})",
             title=CASE_TITLES.get(case, case))  # fmt: skip
    right.set(xlabel="training CPU-minutes (shared machine)", ylabel="FD in the judge's features (lower is better)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def case_table(case: str, runs: list[dict], default: str | None) -> str:
    rows = [
        "| recipe | precision | train img/CPU-s | CPU-min | step | cond. acc | rel. to judge | FD | sample img/CPU-s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: r.get("label", r["recipe_name"])):
        for ema, points in run["points"].items():
            name = run.get("label", run["recipe_name"]) + ("" if ema == "ema" else f" [{ema}]")
            name = f"**{name}**" if run["recipe_name"] == default and ema == "ema" else name
            for p in points:
                rows.append(
                    f"| {name} | {run['train_stats']['precision']} | {run['train_images_per_cpu_s']:.0f} "
                    f"| {p['cpu_minutes']:.1f} | {p['step']} | {p['cond_acc']:.3f} | {p['cond_acc_rel']:.2f} "
                    f"| {p['fd']:.1f} | {p['sample_images_per_cpu_s']:.0f} |"
                )
    return "\n".join(rows)


def recipe_list(runs: list[dict]) -> str:
    import json

    seen = {r.get("label", r["recipe_name"]): r["recipe"] for r in runs}
    return "\n".join(f"- `{name}`: `{json.dumps(recipe)}`" for name, recipe in sorted(seen.items()))


TARGETS = {"cifar16": (0.7, 15.0), "cifar32": (0.5, 30.0)}  # case -> (relative cond. accuracy, within CPU-min)
PEER_THROUGHPUT_TARGET = 4.0  # ours / peer training images per CPU-second, on every peer case (issue 15)


def peer_quality_better(row: dict) -> tuple[bool, tuple[float, float]]:
    """Ours better than the peer at equal CPU-minutes: conditional accuracy higher beyond noise (the Newcombe 95%
    interval of ours - peer lies above 0) and FD in the judge's features lower. Returns (better, interval)."""
    from study.analysis.estimators import newcombe_difference

    ours, peer = row["ours"], row["peer"]
    ci = newcombe_difference(round(ours["cond_acc"] * ours["n"]), ours["n"], round(peer["cond_acc"] * peer["n"]),
                             peer["n"], 0.95)  # fmt: skip
    return ci[0] > 0 and ours["fd"] < peer["fd"], ci


def peer_targets(rows: list[dict]) -> dict:
    """The peer targets per case (bench.json figures): throughput ratio >= PEER_THROUGHPUT_TARGET, better quality
    (with the Newcombe interval of ours - peer in conditional accuracy that decided it)."""
    return {
        "throughput_ratio_target": PEER_THROUGHPUT_TARGET,
        "cases": {row["case"]: _case_targets(row) for row in rows},
    }


def _case_targets(row: dict) -> dict:
    better, (lo, hi) = peer_quality_better(row)
    return {"throughput_ratio": row["throughput_ratio"],
            "throughput_met": row["throughput_ratio"] >= PEER_THROUGHPUT_TARGET,
            "quality_better": better, "cond_acc_difference_ci": [lo, hi]}  # fmt: skip


def peer_target_lines(rows: list[dict]) -> list[str]:
    """The two peer targets, each met on every case or not, with each case's figures and the gap."""
    if not rows:
        return [f"- peer: training throughput >= {PEER_THROUGHPUT_TARGET:g}x the peer's and better quality at equal "
                "CPU-minutes: not measured."]  # fmt: skip
    cases = ", ".join(row["case"] for row in rows)
    verdicts = peer_targets(rows)["cases"]
    speed = []
    for row in rows:
        ratio, ours, peer = row["throughput_ratio"], row["ours"], row["peer"]
        met = verdicts[row["case"]]["throughput_met"]
        verdict = "met" if met else f"missed, gap {PEER_THROUGHPUT_TARGET - ratio:.1f}x"
        speed.append(f"{row['case']} {ratio:.1f}x ({verdict}; {ours['train_images_per_cpu_s']:.0f} vs "
                     f"{peer['train_images_per_cpu_s']:.0f} img/CPU-s, {ours['parameters'] / 1e6:.2f}M {ours['precision']} "
                     f"vs {peer['parameters'] / 1e6:.2f}M {peer['precision']} parameters)")  # fmt: skip
    quality = []
    for row in rows:
        case = verdicts[row["case"]]
        better, (lo, hi) = case["quality_better"], case["cond_acc_difference_ci"]
        ours, peer = row["ours"], row["peer"]
        quality.append(f"{row['case']} at {row['minutes']:g} CPU-min: cond. acc {ours['cond_acc']:.3f} vs "
                       f"{peer['cond_acc']:.3f} (ours - peer {ours['cond_acc'] - peer['cond_acc']:+.2f} "
                       f"[{lo:+.2f}, {hi:+.2f}], Newcombe 95%, n = {ours['n']} each), FD {ours['fd']:.1f} vs "
                       f"{peer['fd']:.1f}" + ("" if better else " (not better)"))  # fmt: skip
    all_speed = all(v["throughput_met"] for v in verdicts.values())
    all_quality = all(v["quality_better"] for v in verdicts.values())
    return [
        f"- peer: training throughput >= {PEER_THROUGHPUT_TARGET:g}x the peer's on {cases}: "
        f"**{'met' if all_speed else 'not met'}**; " + "; ".join(speed) + ".",
        f"- peer: better quality at equal CPU-minutes on {cases}: **{'met' if all_quality else 'not met'}**; "
        + "; ".join(quality)
        + ".",
    ]


def targets_markdown(
    by_case: dict[str, list[dict]], defaults: dict[str, str], peer_rows: list[dict] | None = None
) -> list[str]:
    """Each target met or not, or how far the measured curves got (never extrapolated); the peer targets from the
    side-by-side rows (`peer_rows`, None: not measured)."""
    lines = ["", "#### Targets", ""]
    for case, (goal, minutes) in TARGETS.items():
        points = [(p, r["recipe_name"]) for r in by_case.get(case, []) for p in r["points"]["ema"]]
        if not points:
            lines.append(f"- {case}: relative conditional accuracy >= {goal} within {minutes:g} CPU-min: not measured.")
            continue
        within = [(p, name) for p, name in points if p["cpu_minutes"] <= minutes * 1.05]
        best, name = max(within, key=lambda pn: pn[0]["cond_acc_rel"])
        longest = max(p["cpu_minutes"] for p, _ in points)
        verdict = (
            "met"
            if best["cond_acc_rel"] >= goal
            else ("not met" if longest >= minutes else f"not shown: curves measured to {longest:.1f} CPU-min only")
        )
        lines.append(f"- {case}: >= {goal} within {minutes:g} CPU-min: **{verdict}**; best measured "
                     f"{best['cond_acc_rel']:.2f} ({name}, {best['cpu_minutes']:.1f} CPU-min), gap "
                     f"{max(0.0, goal - best['cond_acc_rel']):.2f}.")  # fmt: skip
    return lines + peer_target_lines(peer_rows or [])


def quality_markdown(
    by_case: dict[str, list[dict]],
    defaults: dict[str, str],
    figures_dir: Path,
    rel: str,
    peer_rows: list[dict] | None = None,
) -> str:
    parts = [
        "### Quality per CPU-minute",
        "",
        "Each run trains one recipe with one torch thread and scores the EMA weights at CPU-minute marks "
        "(process CPU time of training; sampling and judging excluded) by a judge: study_cnn (width 32) trained on "
        "the whole training pool. Conditional accuracy is the judge's accuracy on the asked-for classes, shown "
        "relative to the judge's own test accuracy; FD is the Frechet distance between the judge's penultimate "
        "features of the samples and of as many real test images (same n per class everywhere within a case). "
        "Sampling: each recipe's sampler (20 network evaluations per image unless stated). Measured on a shared "
        "2-core machine (load average in the run files): CPU-minutes drift with other load; compare within a case.",
    ]
    parts += targets_markdown(by_case, defaults, peer_rows)
    for case, runs in by_case.items():
        judge = runs[0]["judge_test_acc"]
        png = figures_dir / f"bench-generator-{case}.png"
        plot_case(case, runs, png)
        n = runs[0]["points"]["ema"][0]["n"]
        unfinished = sorted(r.get("label", r["recipe_name"]) for r in runs if not r.get("complete", True))
        parts += [
            "",
            f"#### {CASE_TITLES.get(case, case)}",
            "",
            f"Judge test accuracy **{judge:.3f}**; n = {n} samples per evaluation. Default: **{defaults.get(case, '-')}**."
            + (f" Unfinished runs (stopped before their last mark): {', '.join(unfinished)}." if unfinished else ""),
            "",
            f"![{case}]({rel}/{png.name})",
            "",
            case_table(case, runs, defaults.get(case)),
            "",
            recipe_list(runs),
        ]
    return "\n".join(parts)


def _rate(per_s: float) -> str:
    """Images per CPU-second: one decimal, or two significant digits below 1 (the peer's 1000-step sampler)."""
    return f"{per_s:.1f}" if per_s >= 1 else f"{per_s:.2g}"


def peer_markdown(rows: list[dict]) -> str:
    lines = [
        "### Side by side with the peer (denoising-diffusion-pytorch)",
        "",
        "Same images, same training CPU-minutes, one process, the same judge and n on both sides (study.bench.peer "
        "says how the peer runs: its own defaults, fp32; sampling speed is its default 1000-step ancestral sampler "
        "with guidance 6, the judged samples come from its DDIM option, 250 steps, same guidance). "
        "Measured on a shared 2-core machine; images/s are per CPU-second.",
        "",
        "| case | CPU-min | side | params | precision | train img/CPU-s | sample img/CPU-s (NFE) | cond. acc | rel. | FD |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, peer = row["ours"], row["peer"]
        for side, r in (("ours: " + ours["recipe"], ours), ("peer", peer)):
            lines.append(
                f"| {row['case']} | {row['minutes']:g} | {side} | {r['parameters'] / 1e6:.2f}M | {r['precision']} "
                f"| {r['train_images_per_cpu_s']:.0f} | {_rate(r['sample_images_per_cpu_s'])} ({r['nfe']}) "
                f"| {r['cond_acc']:.3f} | {r['cond_acc_rel']:.2f} | {r['fd']:.1f} |"
            )
        lines.append(f"| {row['case']} | | ours / peer | | | **{row['throughput_ratio']:.1f}x** | | | | |")
    return "\n".join(lines)
