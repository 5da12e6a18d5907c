"""Face datasets: LFW pair files (View 1 and View 2), the LFW layout, identity folders, AT&T, identity-disjointness."""

import re

import numpy as np
import pytest

from study.data.datasets import load_dataset
from study.data.faces import FaceDataError, all_pairs, parse_pairs
from study.grid import AttData, GridError, IdentityFolderData, LfwData, validate_grid

VIEW1 = "2\nV1\t1\t2\nV2\t1\t3\nV1\t1\tV2\t2\nV3\t1\tV1\t2\n"
VIEW2 = "2 1\nV1 1 2\nV1 1 V2 1\nV3 1 2\nV3 2 V4 1\n"  # 2 folds of 1 same + 1 different


def _image(rng, size=24):
    from PIL import Image

    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    """A tiny LFW-layout tree: T1-T3 (4, 3, 1 images) are in no pair; V1-V4 (3 images each) are."""
    root = tmp_path_factory.mktemp("lfw")
    rng = np.random.default_rng(0)
    for name, n in {"T1": 4, "T2": 3, "T3": 1, "V1": 3, "V2": 3, "V3": 3, "V4": 3}.items():
        (root / "grey" / name).mkdir(parents=True)
        for i in range(1, n + 1):
            _image(rng).save(root / "grey" / name / f"{name}_{i:04d}.jpg", quality=95)
    (root / "view1.txt").write_text(VIEW1)
    (root / "view2.txt").write_text(VIEW2)
    return root


def test_view1_pairs_file(tmp_path):
    (tmp_path / "p.txt").write_text(VIEW1)
    pl = parse_pairs(tmp_path / "p.txt")
    assert pl.view == "View 1" and pl.folds is None
    assert pl.names == (("V1", "V1"), ("V2", "V2"), ("V1", "V2"), ("V3", "V1"))
    assert pl.numbers.tolist() == [[1, 2], [1, 3], [1, 2], [1, 2]]
    assert pl.same.tolist() == [True, True, False, False]
    assert pl.identities == {"V1", "V2", "V3"}


def test_view2_pairs_file(tmp_path):
    (tmp_path / "p.txt").write_text(VIEW2)
    pl = parse_pairs(tmp_path / "p.txt")
    assert pl.view == "View 2"
    assert pl.folds.tolist() == [0, 0, 1, 1]
    assert pl.same.tolist() == [True, False, True, False]
    assert pl.names[3] == ("V3", "V4") and pl.numbers[3].tolist() == [2, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2\nA 1 2\n", "promises 1 x (2 same + 2 different) = 4 pairs"),
        ("1\nA 1 2\nA 1 B\n", "line 3: expected `name1 i name2 j`"),
        ("1\nA 1 B 2\nA 1 B 2\n", "line 2: expected `name i j`"),
        ("1\nA 1 2\nA 1 A 2\n", "names A twice"),
        ("pairs\n", "line 1 must be"),
    ],
)
def test_bad_pairs_files_are_named(tmp_path, text, message):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(FaceDataError, match=re.escape(message)):
        parse_pairs(tmp_path / "p.txt")


def test_lfw_trains_on_identities_in_no_pair(lfw, tmp_path):
    spec = LfwData(name="lfw", root=str(lfw / "grey"), pairs=str(lfw / "view2.txt"), resolution=8, min_images=3)
    ds = load_dataset(spec, cache_dir=tmp_path)
    assert ds.class_names == ("T1", "T2")  # T3 has one image; V1-V4 are in pairs
    assert ds.test is None and ds.train.images.shape == (7, 1, 8, 8)
    assert ds.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    v = ds.verification
    assert v.names == ("V1", "V2", "V3", "V4") and v.folds.tolist() == [0, 0, 1, 1]
    assert v.same.tolist() == [True, False, True, False]
    # images: every image the pairs name, once (V1_1, V1_2, V2_1, V3_1, V3_2, V4_1)
    assert len(v.images) == 6 and v.identity.tolist() == [0, 0, 1, 2, 2, 3]
    assert v.pairs.tolist() == [[0, 1], [0, 2], [3, 4], [4, 5]]
    assert "View 2" in v.protocol and v.gallery is None
    again = load_dataset(spec, cache_dir=tmp_path)  # the decoded arrays come back from the cache, unchanged
    assert again is ds or (again.verification.images == v.images).all()


def test_lfw_centre_crop_takes_the_middle(lfw, tmp_path):
    from PIL import Image

    full = load_dataset(LfwData(name="lfw", root=str(lfw / "grey"), pairs=str(lfw / "view1.txt"), resolution=12),
                        cache_dir=tmp_path)  # fmt: skip
    half = load_dataset(LfwData(name="lfw", root=str(lfw / "grey"), pairs=str(lfw / "view1.txt"), resolution=12,
                                crop=0.5), cache_dir=tmp_path)  # fmt: skip
    with Image.open(lfw / "grey" / "T1" / "T1_0001.jpg") as im:
        middle = np.asarray(im.crop((6, 6, 18, 18)))  # the centre 12 x 12 of 24 x 24: no resampling at 12 px
        whole = np.asarray(im.resize((12, 12), Image.Resampling.BICUBIC))
    assert np.array_equal(half.train.images[0, 0].numpy(), middle)
    assert np.array_equal(full.train.images[0, 0].numpy(), whole)


def test_a_training_identity_in_a_pair_is_an_error_naming_it(lfw, tmp_path):
    spec = LfwData(name="lfw", root=str(lfw / "grey"), pairs=str(lfw / "view1.txt"), identities=["T1", "V2", "V3"])
    with pytest.raises(FaceDataError, match=r"2 training identities are also verification identities \(V2, V3\)"):
        load_dataset(spec, cache_dir=tmp_path)


def test_identity_folder_split_is_seeded_and_disjoint(lfw, tmp_path):
    root = str(lfw / "grey")
    spec = IdentityFolderData(name="identityfolder", root=root, verify=2, split_seed=1, resolution=8)
    ds = load_dataset(spec, cache_dir=tmp_path)
    v = ds.verification
    assert len(v.names) == 2 and not set(v.names) & set(ds.class_names)
    assert len(ds.class_names) == 4  # 7 identities, T3 with 1 image (min_images 2), 2 of the other 6 held out
    assert set(ds.class_names) | set(v.names) | {"T3"} == {"T1", "T2", "T3", "V1", "V2", "V3", "V4"}
    # every pair of the held-out images; the first image of each identity is the gallery
    assert len(v.pairs) == len(v.images) * (len(v.images) - 1) // 2
    assert v.gallery.sum() == 2 and v.folds is None
    same_seed = load_dataset(spec, cache_dir=tmp_path / "again")
    assert same_seed.verification.names == v.names
    splits = {load_dataset(spec.model_copy(update={"split_seed": s}), cache_dir=tmp_path).verification.names
              for s in range(5)}  # fmt: skip
    assert len(splits) > 1  # the split follows the seed
    with pytest.raises(FaceDataError, match=r"\(V1\)"):
        load_dataset(spec.model_copy(update={"verify": ["V1", "V2"], "identities": ["T1", "V1"]}), cache_dir=tmp_path)


def test_all_pairs_and_its_sample():
    identity = np.array([0, 0, 0, 1, 1, 2])
    idx, same = all_pairs(identity, None, 0)
    assert len(idx) == 15 and same.sum() == 4  # C(3,2) + C(2,2) same pairs
    idx, same = all_pairs(identity, 3, 0)
    assert same.sum() == 3 and (~same).sum() == 3 and (np.diff(idx[:, 0] * 10 + idx[:, 1]) > 0).all()


def test_att_trains_on_28_and_verifies_on_12(shared_data, tmp_path):
    ds = load_dataset(AttData(name="att", path=str(shared_data / "att_faces" / "att_faces.npz")), cache_dir=tmp_path)
    assert ds.num_classes == 28 and len(ds.train) == 280 and ds.class_names[:2] == ("s1", "s2")
    v = ds.verification
    assert v.names == tuple(f"s{i}" for i in range(29, 41)) and len(v.images) == 120
    assert len(v.pairs) == 120 * 119 // 2 and v.same.sum() == 12 * 45 and v.gallery.sum() == 12
    assert ds.train.images.shape[1:] == (1, 32, 32)


def test_grid_checks_images_per_identity():
    raw = {"name": "f", "dataset": {"name": "lfw", "root": "r", "pairs": "p", "min_images": 5},
           "real": {"base": [3], "extra": [3]}, "seeds": [0]}  # fmt: skip
    with pytest.raises(GridError, match="ask for 6 images per identity but dataset.min_images is 5"):
        validate_grid(raw)
    raw["dataset"]["min_images"] = 6
    grid = validate_grid(raw)
    assert grid.classifier.embedding.loss == "arcface"  # face datasets train an embedding model by default
    soft = {"sample": {"strategy": "scoremix", "labels": "soft"}}
    with pytest.raises(GridError, match=r"\['sm'\]: `labels: soft` has no target for the margin loss"):
        validate_grid({**raw, "synthetic": {"volume": [2]}, "generators": {"sm": soft}})


def test_analysis_metric_fits_the_dataset():
    face = {"name": "f", "dataset": {"name": "att"}, "real": {"base": [3]}, "seeds": [0]}
    assert validate_grid(face).metric == "verif_acc"  # face grids: LFW pair accuracy by default
    assert validate_grid({**face, "analysis": {"metric": "tar_at_far_1e-2"}}).metric == "tar_at_far_1e-2"
    with pytest.raises(GridError, match="'test_acc' is not measured on a face dataset's verification pairs"):
        validate_grid({**face, "analysis": {"metric": "test_acc"}})
    digits = {**face, "dataset": {"name": "digits"}}
    assert validate_grid(digits).metric == "test_acc"
    with pytest.raises(GridError, match="'verif_auc' is not measured on a test split"):
        validate_grid({**digits, "analysis": {"metric": "verif_auc"}})
    with pytest.raises(GridError, match="unknown metric 'acc'"):
        validate_grid({**digits, "analysis": {"metric": "acc"}})


@pytest.mark.slow
def test_eigenfaces_anchor_lands_near_the_published_number(shared_data):
    """Eigenfaces through the study's protocol code on LFW View 2: the published 60.02 ± 0.79 % (crop 1.0)."""
    from study.bench.faces import Row, eigenfaces

    r = eigenfaces(shared_data, Row(1.0, 32, 100, "cosine"))
    assert r["pairs"] == 6000 and r["train_identities"] == 1468 and "View 2" in r["protocol"]
    assert abs(r["acc"] - 0.6002) < 3 * max(r["se"], 0.0079)


def test_face_grids_plan_no_cas():
    """CAS is test accuracy and face datasets have no test split: their diagnostics plan none (no cost)."""
    from study.grid import expand
    from study.runner.plan import make_plan

    gen = {"model": {"preset": "tiny"}, "train": {"steps": 10}}
    raw = {"name": "f", "dataset": {"name": "att"}, "real": {"base": [3]}, "synthetic": {"volume": [3]},
           "generators": {"conditional": gen}, "seeds": [0]}  # fmt: skip
    for dataset, cas in (({"name": "att"}, False), ({"name": "digits"}, True)):
        grid = validate_grid({**raw, "dataset": dataset})
        diagnostics = [n for n in make_plan(grid, expand(grid)).nodes.values() if n.stage == "diagnostics"]
        assert len(diagnostics) == 1 and (diagnostics[0].art.config["cas"] is not None) == cas
