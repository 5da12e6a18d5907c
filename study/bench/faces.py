"""Face verification sanity anchor: `python -m study.bench faces [--data DIR]`.

Eigenfaces (Turk & Pentland 1991) through the study's own protocol code: the LFW dataset spec with View 2's
`pairs.txt` (study.data.faces: training identities are the 1468 identities in no View 2 pair, 1549 images),
PCA on those training images, verification images projected, cosine similarity (or minus the L2 distance) as
the score, and LFW's 10-fold pair accuracy (study.verification: threshold chosen on 9 folds, mean over the
10 held-out folds, ± the standard error sigma / sqrt(10)). The LFW results page lists the unsupervised
Eigenfaces result on View 2 as 60.02 ± 0.79 %; this copy of LFW is greyscale and funneled (aligned), so
with the face cropped our numbers should land near it, a little above.

Rows: the study's LFW preprocessing (centre crop 0.5 of the 250 px frame, 32 px) with 100 components and
cosine scores is the anchor; beside it the whole frame (crop 1.0), 64 px and the L2 score, to show how much
the preprocessing moves it. Cost: ~15 s on one core once the decoded images are cached (decoding ~5 s per
preprocessing). Writes the "faces" section of reports/bench.md and reports/bench.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.decomposition import PCA

from study.bench.common import REPORTS, merge_results
from study.data.datasets import load_dataset
from study.grid import LfwData
from study.verification import cosine_scores, verification_metrics

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = {"acc": 0.6002, "se": 0.0079}  # LFW results page: Eigenfaces (Turk & Pentland), View 2, unsupervised


class Row(NamedTuple):
    crop: float
    resolution: int
    components: int
    score: str  # cosine | l2
    anchor: bool = False


ROWS = (
    Row(0.5, 32, 100, "cosine", anchor=True),
    Row(0.5, 32, 100, "l2"),
    Row(0.5, 64, 100, "cosine"),
    Row(0.5, 32, 20, "cosine"),
    Row(1.0, 32, 100, "cosine"),
)


def eigenfaces(data: Path, row: Row) -> dict:
    """PCA on the training identities, scores on View 2's pairs, the study's verification metrics."""
    spec = LfwData(name="lfw", root=str(data / "lfw" / "lfw-grey"), pairs=str(data / "lfw" / "pairs.txt"),
                   crop=row.crop, resolution=row.resolution, min_images=1)  # fmt: skip
    ds = load_dataset(spec)
    v = ds.verification
    start = time.process_time()
    train = ds.train.images.reshape(len(ds.train), -1).numpy() / 255.0
    pca = PCA(row.components, random_state=0).fit(train)
    emb = pca.transform(v.images.reshape(len(v.images), -1).numpy() / 255.0)
    if row.score == "cosine":
        scores = cosine_scores(emb, v.pairs)
    else:
        scores = -np.linalg.norm(emb[v.pairs[:, 0]] - emb[v.pairs[:, 1]], axis=1)
    m = verification_metrics(scores, v.same, folds=v.folds, n_boot=0)
    return {
        **row._asdict(),
        "acc": m["verif_acc"],
        "se": m["verif_acc_se"],
        "auc": m["verif_auc"],
        "eer": m["verif_eer"],
        "tar_at_far_1e-2": m["tar_at_far_1e-2"],
        "train_images": len(ds.train),
        "train_identities": ds.num_classes,
        "pairs": m["n_pairs"],
        "protocol": v.protocol,
        "cpu_seconds": time.process_time() - start,
    }


def markdown(results: list[dict]) -> str:
    head = results[0]
    lines = [
        "## faces",
        "",
        "Eigenfaces on LFW View 2 through the study's protocol code (`python -m study.bench faces`): PCA on the "
        f"{head['train_images']} images of the {head['train_identities']} identities in no View 2 pair, "
        f"{head['pairs']} pairs in 10 folds, threshold chosen on 9 folds; pair accuracy is the mean over the 10 "
        "held-out folds ± its standard error (sigma / sqrt(10)). Published: Eigenfaces (Turk & Pentland) on LFW "
        f"View 2, unsupervised, {100 * PUBLISHED['acc']:.2f} ± {100 * PUBLISHED['se']:.2f} % (LFW results page). "
        "Ours: the greyscale funneled copy in shared/data.",
        "",
        "| crop | px | components | score | pair accuracy (%) | AUC | EER | TAR@FAR=1e-2 | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mark = "anchor" if r["anchor"] else ""
        lines.append(
            f"| {r['crop']:g} | {r['resolution']} | {r['components']} | {r['score']} | "
            f"{100 * r['acc']:.2f} ± {100 * r['se']:.2f} | {r['auc']:.3f} | {r['eer']:.3f} | "
            f"{r['tar_at_far_1e-2']:.3f} | {mark} |"
        )
    lines.append(f"| | | | published | {100 * PUBLISHED['acc']:.2f} ± {100 * PUBLISHED['se']:.2f} | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench faces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    default = Path(os.environ.get("STUDY_SHARED_DATA", REPO.parent / "shared" / "data"))
    p.add_argument("--data", type=Path, default=default, help="folder holding lfw/ (lfw-grey/, pairs.txt)")
    p.add_argument("--reports", type=Path, default=REPORTS, help="where bench.md and bench.json are written")
    args = p.parse_args(argv)
    if not (args.data / "lfw" / "pairs.txt").exists():
        print(f"error: {args.data / 'lfw' / 'pairs.txt'} not found (set --data or STUDY_SHARED_DATA)", file=sys.stderr)
        return 2
    results = []
    for row in ROWS:
        results.append(eigenfaces(args.data, row))
        r = results[-1]
        print(f"[faces] eigenfaces crop {row.crop:g} {row.resolution}px k={row.components} {row.score}: "
              f"{100 * r['acc']:.2f} ± {100 * r['se']:.2f} %", flush=True)  # fmt: skip
    anchor = next(r for r in results if r["anchor"])
    figures = {
        "eigenfaces_lfw_view2_acc": anchor["acc"],
        "eigenfaces_lfw_view2_se": anchor["se"],
        "eigenfaces_published_acc": PUBLISHED["acc"],
        "eigenfaces_published_se": PUBLISHED["se"],
        "rows": results,
    }
    merge_results("faces", figures, markdown(results), args.reports)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
