"""`--dry-run` pre-flight of face grids (issue 19): the per-identity minimums. Whatever the real run rejects
before computing (too few images per training identity for base + extra, more training identities asked for
than have `min_images`, a named identity that does not qualify, too many verification identities), the dry
run rejects with exit 2 and the same message; a face tree that passes is decoded once, into the decode cache
the real run reads. Nothing here trains a model: the real runs stop at their pre-flight."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.data import datasets, faces
from study.runner import cli

# Images per identity in the generated tree: 2 verification identities are drawn among those with >= 2.
COUNTS = {"ann": 3, "bob": 3, "cid": 4, "dee": 4, "eve": 5, "fay": 5, "gus": 6, "hal": 6, "ida": 8, "jon": 8}

GRID = """
name: faces-pre
dataset: {{name: identityfolder, root: "{root}", verify: {verify}, resolution: 8, min_images: {min_images}{extra_opts}}}
real: {{base: [2], extra: [{extra}]}}
classifier: {{arch: study_cnn, width: 4, steps: 2, batch_size: 8, embedding: {{dim: 8}}}}
seeds: [0]
device: cpu
"""


def identity_tree(root: Path) -> Path:
    """root/<identity>/<k>.png: 12 x 12 grey noise, COUNTS[identity] images each."""
    rng = np.random.default_rng(0)
    for name, n in COUNTS.items():
        (root / name).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(root / name / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return identity_tree(tmp_path_factory.mktemp("faces") / "ids")


def grid_file(tmp_path: Path, root: Path, *, verify=2, min_images=4, extra=2, extra_opts="") -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(root=root, verify=verify, min_images=min_images, extra=extra, extra_opts=extra_opts))
    return path


def dry_and_real(capsys, grid: Path, results: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    """(exit code, stderr) of the dry run and of the real run, each as a fresh process would see the dataset
    (only the on-disk decode cache kept between them)."""
    out = []
    for extra in (["--dry-run"], []):
        datasets._MEMO.clear()
        out.append((cli.main([str(grid), "--results", str(results), "--quiet", *extra]), capsys.readouterr().err))
    return out[0], out[1]


@pytest.mark.parametrize(
    "case, options, expected",
    [
        # split_seed 0 holds out eve and jon; gus, hal and ida have >= 6 images: 7 cannot be chosen.
        ("more identities than qualify", dict(min_images=6, extra=4, extra_opts=", identities: 7"), "only 3 qualify"),
        ("named identity below the minimum", dict(extra_opts=", identities: [ann, hal, ida]"), "['ann'] do not"),
        ("named verification identity", dict(extra_opts=", identities: [hal, jon]"), "verification identities (jon)"),
        ("too many verification identities", dict(verify=11), "dataset.verify: 11 asked for, 10 identities"),
        ("base + extra above min_images", dict(min_images=3), "ask for 4 images per identity but dataset.min_images"),
        ("one training identity", dict(min_images=8), "1 training identities qualify"),  # ida; jon is held out
    ],
)
def test_dry_run_rejects_a_face_grid_the_real_run_rejects(tree, tmp_path, capsys, case, options, expected):
    grid = grid_file(tmp_path, tree, **options)
    dry, real = dry_and_real(capsys, grid, tmp_path / "results")
    assert dry == real, case
    assert dry[0] == 2 and expected in dry[1] and "Traceback" not in dry[1], (case, dry)
    assert not list((tmp_path / "results").glob("store/*/*/done.json"))


def test_split_seed_0_holds_out_eve_and_jon(tree):
    """The cases above rest on this split."""
    from study.grid import IdentityFolderData

    spec = IdentityFolderData(name="identityfolder", root=str(tree), verify=2, min_images=4, resolution=8)
    _, chosen, _, verification = faces.load_identity_folder(spec)
    assert verification.names == ("eve", "jon") and chosen == ["cid", "dee", "fay", "gus", "hal", "ida"]


def test_a_face_tree_that_passes_is_decoded_once(tree, tmp_path, capsys, monkeypatch):
    """The dry run decodes every image once (training identities and held-out ones) into the store's decode
    cache; the real run reads the cache and decodes nothing."""
    decoded: list[Path] = []
    real_decode = faces.decode
    monkeypatch.setattr(faces, "decode", lambda files, *a: decoded.extend(files) or real_decode(files, *a))
    grid = grid_file(tmp_path, tree)
    datasets._MEMO.clear()
    assert cli.main([str(grid), "--results", str(tmp_path / "results"), "--quiet", "--dry-run"]) == 0
    assert "pre-flight: inputs checked (6 classes)" in capsys.readouterr().out  # 8 with >= 4 images, 2 held out
    assert len(decoded) == len(set(decoded))  # no image decoded twice
    first = len(decoded)
    datasets._MEMO.clear()  # a new process: only the on-disk cache is left
    from study.grid import load_grid

    ds = datasets.load_dataset(load_grid(grid).dataset, cache_dir=tmp_path / "results" / "store" / "dataset")
    assert len(decoded) == first  # read from the decode cache, not decoded again
    assert first == len(ds.train) + len(ds.verification.images)


def test_an_identity_short_of_base_plus_extra_is_named(shared_data, tmp_path, capsys):
    """AT&T has 10 images per identity and no min_images: base 4 + extra 7 fails on the first identity."""
    grid = tmp_path / "grid.yaml"
    path = shared_data / "att_faces" / "att_faces.npz"
    att = (
        GRID.split("\n", 3)[3]
        .replace("{{", "{")
        .replace("}}", "}")
        .replace("base: [2], extra: [{extra}]", "base: [4], extra: [7]")
    )
    grid.write_text(f'name: att-pre\ndataset: {{name: att, path: "{path}", resolution: 8}}\n{att}')
    dry, real = dry_and_real(capsys, grid, tmp_path / "results")
    assert dry == real and dry[0] == 2, dry
    assert "identity 's1' has 10 training images; 11 per identity were asked for" in dry[1]


def test_lfw_asking_for_more_identities_than_qualify_fails_before_decoding(shared_data, tmp_path, capsys, monkeypatch):
    """grids/faces-lfw.yaml with 1000 training identities (fewer qualify: counted here from the tree and the
    pairs file): both runs exit 2 with the same message, and neither decodes an image (the tree is listed and
    the pairs checked, nothing more)."""
    lfw = shared_data / "lfw"
    if not (lfw / "lfw-grey").is_dir():
        pytest.skip(f"LFW not staged under {lfw}")
    monkeypatch.setattr(faces, "decode", lambda *a: pytest.fail("an image was decoded"))
    text = (Path(__file__).resolve().parents[1] / "grids" / "faces-lfw.yaml").read_text()
    text, n = re.subn(r"(?m)^  min_images: (\d+)$", r"\g<0>\n  identities: 1000", text)
    assert n == 1, "grids/faces-lfw.yaml has no `min_images:` line in its dataset block"
    min_images = int(re.search(r"(?m)^  min_images: (\d+)$", text).group(1))
    in_pairs = {w for line in (lfw / "pairsDevTest.txt").read_text().splitlines()[1:] for w in line.split()[::2]}
    qualify = sum(
        1 for d in (lfw / "lfw-grey").iterdir() if d.name not in in_pairs and len(list(d.iterdir())) >= min_images
    )
    grid = tmp_path / "faces-lfw.yaml"
    grid.write_text(text.replace("${STUDY_DATA:-../shared/data}", str(shared_data)))
    dry, real = dry_and_real(capsys, grid, tmp_path / "results")
    assert dry == real and dry[0] == 2, dry
    expected = f"1000 asked for, only {qualify} qualify (in no pair of pairsDevTest.txt and >= {min_images} images)"
    assert f"dataset.identities: {expected}" in dry[1], dry[1]
