"""The modes of `python -m study.bench generator` (see study.bench.generator): each measures its part and merges
its figures and text into the "generator" (or "sampler") section of reports/bench.json / bench.md, keeping the
other modes' figures."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from study.bench.common import merge_mode, peak_flops
from study.bench.generator import (
    GUIDANCE_CHECK,
    HEADLINE,
    SAMPLER_RUNS,
    WORKLOADS,
    difference_ci,
    digits_quality,
    sampler_check,
    throughput,
)
from study.bench.quality import CASES, DEFAULTS, RECIPES, RUNS, SWEEPS, cached_runs, quality_run
from study.bench.quality_report import label_runs, peer_markdown, peer_targets, quality_markdown
from study.models.device import resolve_precision

GENERATOR_MODES = ("throughput", "quality", "peer")
SAMPLER_MODES = ("digits", "checks")


def _noise(before: float) -> dict:
    return {"threads": torch.get_num_threads(), "load_before": before, "load_after": os.getloadavg()[0]}


# --- throughput and precision ---------------------------------------------------------------------------------


def throughput_mode(args) -> int:
    before = os.getloadavg()[0]
    peak = peak_flops(clock=time.process_time)
    choice = resolve_precision("auto", torch.device("cpu"))
    workloads = {}
    for name in args.workloads or WORKLOADS:
        model, resolution, channels, batch = WORKLOADS[name]
        workloads[name] = throughput(model, resolution, channels, batch, peak, args.compile)
        print(f"{name}: {workloads[name]['train_generator']['images_per_s']:.0f} images/CPU-s", flush=True)
    headline = HEADLINE if HEADLINE in workloads else next(iter(workloads))
    figures = {
        "precision_auto": choice.name,
        "precision_reason": choice.reason,
        "bf16_over_fp32": workloads[headline]["bf16_over_fp32"],
        "bf16_over_fp32_workload": headline,
        "workloads": workloads,
        **peak,
    }
    if not args.no_samplers:
        train_stats, quality = digits_quality(Path(args.grid), args.base, seed=0)
        figures |= {
            "cond_acc": quality["runs"]["quickstart"]["cond_acc"],
            "cond_acc_n": quality["runs"]["quickstart"]["n"],
            "train_cpu_seconds": train_stats["cpu_seconds"],
            "train_stats": train_stats,
            "quickstart_arm": quality["arm"],
        }
    noise = _noise(before)
    figures |= noise
    merge_mode("generator", "throughput", figures, throughput_markdown(figures), GENERATOR_MODES, args.reports)
    if not args.no_samplers:
        runs = quality["runs"]
        sampler = {
            "images_per_s": runs["quickstart"]["images_per_s"],
            "nfe": runs["quickstart"]["nfe"],
            "runs": runs,
            "dpmpp_minus_ddpm": runs["dpmpp-20"]["cond_acc"] - runs["ddpm-250"]["cond_acc"],
            "dpmpp_minus_ddpm_ci95": difference_ci(runs["dpmpp-20"], runs["ddpm-250"]),
            **noise,
        }
        merge_mode("sampler", "digits", sampler, digits_sampler_markdown(sampler), SAMPLER_MODES, args.reports)
    print(throughput_markdown(figures))
    return 0


def throughput_markdown(gen: dict) -> str:
    arm = gen.get("quickstart_arm")
    lines = [
        "### Training throughput and precision",
        "",
        f"Measured on a shared 2-core CPU, timed in process CPU time ({gen['threads']} torch thread(s); load "
        f"average {gen['load_before']:.1f} before, {gen['load_after']:.1f} after). Dense matmul peak in this run: "
        f"{gen['matmul_fp32_flops'] / 1e9:.0f} GFLOP/s fp32, {gen['matmul_bf16_flops'] / 1e9:.0f} GFLOP/s bf16. "
        "`frac` = achieved FLOP/s over the peak of the precision used; `of fastest` = over the machine's fastest "
        "peak (the larger of the two).",
        "",
        f"`precision: auto` chose **{gen['precision_auto']}** here: {gen['precision_reason']}.",
        "",
        "| workload | input | params | GFLOP/step | fp32 img/s (frac, of fastest) | bf16 img/s (frac, of fastest) "
        "| bf16 / fp32 | channels-last img/s | train_generator img/s (precision) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in gen["workloads"].items():
        tg = p["train_generator"]
        f32, b16 = p["fp32"], p["bf16"]
        lines.append(
            f"| {name} | {p['batch']}x{p['channels']}x{p['resolution']}² | {p['parameters'] / 1e6:.2f}M "
            f"| {p['step_gflop']:.2f} | {f32['images_per_s']:.0f} ({f32['flops_fraction']:.2f}, "
            f"{f32['flops_fraction_of_fastest']:.2f}) | {b16['images_per_s']:.0f} ({b16['flops_fraction']:.2f}, "
            f"{b16['flops_fraction_of_fastest']:.2f}) | {p['bf16_over_fp32']:.2f} "
            f"| {p['fp32_channels_last']['images_per_s']:.0f} | {tg['images_per_s']:.0f} ({tg['precision']}) |"
        )
    compiled = {n: p["fp32_compiled"] for n, p in gen["workloads"].items() if "fp32_compiled" in p}
    if compiled:
        lines.append("")
        lines.append(
            "- torch.compile (fp32): "
            + ", ".join(
                f"{n} {c['images_per_s']:.0f} img/s after a {c['compile_s']:.0f} s compile" for n, c in compiled.items()
            )
        )
    lines += [
        "",
        f"- `bf16_over_fp32` ({gen['bf16_over_fp32_workload']}) = **{gen['bf16_over_fp32']:.2f}**.",
    ]
    if "quickstart_arm" not in gen:
        return "\n".join(lines)
    lines += [
        f"- Quickstart generator (preset {arm['model']['preset']}, {arm['train']['steps']} steps x "
        f"{arm['train']['batch_size']}, digits base 20/class): **{gen['train_cpu_seconds']:.1f} CPU-s** of training "
        f"({gen['train_stats']['precision']}); `cond_acc` = **{gen['cond_acc']:.3f}** (n = {gen['cond_acc_n']}; "
        f"{arm['sample']['sampler']} {arm['sample']['steps']} steps, guidance {arm['sample']['guidance']:g}).",
    ]
    return "\n".join(lines)


def _per_s(rate: float) -> str:
    """Images per CPU-second: whole numbers from 10, two significant digits below (DDPM-250 at 32 px: 0.2)."""
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def _sampler_table(runs: dict, fd: bool) -> list[str]:
    head = "| sampler | steps | guidance | NFE/image | images/CPU-s | n | cond. accuracy [95% CI] |" + (
        " FD |" if fd else ""
    )
    out = [head, "|---|---|---|---|---|---|---|" + ("---|" if fd else "")]
    for label, r in runs.items():
        lo, hi = r["cond_acc_ci95"]
        out.append(
            f"| {label} | {r['steps']} | {r['guidance']:g} | {r['nfe']} | {_per_s(r['images_per_s'])} | {r['n']} "
            f"| {r['cond_acc']:.3f} [{lo:.3f}, {hi:.3f}] |" + (f" {r['fd']:.1f} |" if fd else "")
        )
    return out


def digits_sampler_markdown(sampler: dict) -> str:
    lo, hi = sampler["dpmpp_minus_ddpm_ci95"]
    return "\n".join(
        [
            "### Samplers on the quickstart generator",
            "",
            "The quickstart generator (digits 8 px), sampled by each sampler; conditional accuracy = a logistic "
            "regression trained on the whole real digits pool, on the asked-for labels (95% Wilson intervals). "
            "Shared machine; images per CPU-second.",
            "",
            *_sampler_table(sampler["runs"], fd=False),
            "",
            f"- `images_per_s` = **{sampler['images_per_s']:.0f}**, `nfe` = **{sampler['nfe']}** (the quickstart sampler).",
            f"- DPM-Solver++ 20 steps minus DDPM 250 steps: {sampler['dpmpp_minus_ddpm']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            "(Newcombe 95% interval; within noise when it holds 0 or lies above it).",
        ]
    )


# --- quality, peer, sampler checks ---------------------------------------------------------------------------


def quality_figures(by_case: dict[str, list[dict]]) -> dict:
    """Headline figures: each case's default recipe at its budget (the default's last mark)."""
    figures: dict = {"defaults": dict(DEFAULTS), "quality": {}}
    for case, runs in by_case.items():
        figures["quality"][case] = {
            r["recipe_name"]: {"recipe": r["recipe"], "points": r["points"], "judge_test_acc": r["judge_test_acc"],
                               "train_images_per_cpu_s": r["train_images_per_cpu_s"],
                               "precision": r["train_stats"]["precision"]}
            for r in runs
        }  # fmt: skip
        default = next((r for r in runs if r["recipe_name"] == DEFAULTS.get(case)), None)
        if default is not None:
            last = default["points"]["ema"][-1]
            figures[f"cond_acc_rel_{case}"] = last["cond_acc_rel"]
            figures[f"cond_acc_{case}"] = last["cond_acc"]
            figures[f"fd_{case}"] = last["fd"]
            figures[f"{case}_train_cpu_minutes"] = last["cpu_minutes"]
            figures[f"judge_acc_{case}"] = default["judge_test_acc"]
    return figures


def stored_section(reports: Path, section: str) -> dict:
    """One section of bench.json as an earlier run left it ({} if there is none)."""
    path = reports / "bench.json"
    return json.loads(path.read_text()).get(section, {}) if path.exists() else {}


def sampler_order(runs: dict) -> dict:
    """The runs in the order they are sampled (bench.json keeps them sorted by name): the fixed samplers, the
    default with and without guidance, the default at stronger guidance."""
    order = [label for label, *_ in SAMPLER_RUNS] + ["default", "default-unguided"]
    order += [f"default-g{g:g}" for g in GUIDANCE_CHECK]
    return dict(sorted(runs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def checks_markdown(checks: list[dict]) -> str:
    text = ["### Sampling checks on the default recipes", ""]
    for c in checks:
        lo, hi = c["dpmpp_minus_ddpm_ci95"]
        text += [f"{c['case']} ({c['recipe']}; judge test accuracy {c['judge_test_acc']:.3f}; shared machine):", "",
                 *_sampler_table(sampler_order(c["runs"]), fd=True), "",
                 f"- default sampler minus DDPM 250 steps: {c['dpmpp_minus_ddpm']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                 "(Newcombe 95%).", ""]  # fmt: skip
    return "\n".join(text)


def run(args) -> int:
    runs_dir = args.runs or RUNS
    rows = None
    if args.quality:
        for case in args.quality:
            for recipe in args.recipes or SWEEPS[case]:
                quality_run(case, recipe, tuple(args.ema), runs_dir)
    if args.peer:
        from study.bench.peer import PEER_CASES, peer_available, side_by_side

        if not peer_available():
            print("error: the peer is not installed: pip install 'study[peer]' (denoising-diffusion-pytorch)")
            return 2
        rows = [side_by_side(case, m, dim, DEFAULTS[case], runs_dir) for case, (m, dim) in PEER_CASES.items()]
        digits = next(r for r in rows if r["case"] == "digits16")
        figures = {
            "peer": rows,
            "peer_throughput_ratio": digits["throughput_ratio"],
            "peer_cond_acc": digits["peer"]["cond_acc"],
            "ours_cond_acc_vs_peer": digits["ours"]["cond_acc"],
            "peer_throughput_ratio_cifar16": next(r["throughput_ratio"] for r in rows if r["case"] == "cifar16"),
            "peer_targets": peer_targets(rows),
        }
        merge_mode("generator", "peer", figures, peer_markdown(rows), GENERATOR_MODES, args.reports)
    checks = None
    if args.sampler_check:
        checks = [sampler_check(case, runs_dir, scale=0.2) for case in args.sampler_check]
    elif args.report:  # the text again from the checks kept in bench.json (they are not cached elsewhere)
        checks = stored_section(args.reports, "sampler").get("checks")
    if checks:
        merge_mode("sampler", "checks", {"checks": checks}, checks_markdown(checks), SAMPLER_MODES, args.reports)
    # The targets list (in the quality text) includes the peer targets: a --peer run rebuilds it from the cached
    # quality runs too, and a quality rebuild takes the peer rows kept in bench.json.
    cases = [c for c in CASES if not c.endswith("-peer")]
    if args.quality is not None or args.report or (args.peer and any(cached_runs(runs_dir, c) for c in cases)):
        named = {name: make().identity() for name, make in RECIPES.items()}
        by_case = {case: label_runs(runs, named) for case in cases if (runs := cached_runs(runs_dir, case))}
        peer_rows = rows if rows is not None else stored_section(args.reports, "generator").get("peer")
        text = quality_markdown(by_case, DEFAULTS, args.reports, ".", peer_rows)
        merge_mode("generator", "quality", quality_figures(by_case), text, GENERATOR_MODES, args.reports)
        print(text)
    return 0
