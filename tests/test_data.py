"""Dataset loaders on real data, their error messages, and nested class-balanced subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from study.data.datasets import DatasetError, _to_split, load_dataset, real_indices, subset_indices
from study.grid import DigitsData, ImageFolderData, MedmnistData, NpzData


def check(ds, n_classes, channels, resolution):
    assert ds.num_classes == n_classes == len(ds.class_names)
    for split in (ds.train, ds.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (channels, resolution, resolution)
        assert int(split.labels.min()) >= 0 and int(split.labels.max()) < n_classes
        assert len(split.images) == len(split.labels) > 0


def test_digits_is_bundled_and_split_stratified():
    ds = load_dataset(DigitsData(name="digits"))
    check(ds, 10, 1, 8)
    assert len(ds.train) + len(ds.test) == 1797
    assert int(ds.train.images.max()) == 255 and not ds.flip  # 0..16 rescaled; digits never flip
    counts = torch.bincount(ds.test.labels)
    assert counts.min() >= 50  # stratified: every class is in the test split
    again = load_dataset(DigitsData(name="digits"))
    assert torch.equal(again.train.images, ds.train.images)


def test_resolution_resizes(tmp_path):
    ds = load_dataset(DigitsData(name="digits", resolution=16), cache_dir=tmp_path)
    check(ds, 10, 1, 16)
    assert list(tmp_path.glob("digits__*.npz"))  # decoded data is cached on disk
    assert load_dataset(DigitsData(name="digits", resolution=16), cache_dir=tmp_path).key == ds.key


@pytest.mark.parametrize(
    ("flavor", "n_train", "n_val", "n_test"), [("breastmnist", 546, 78, 156), ("pneumoniamnist", 4708, 524, 624)]
)
def test_medmnist_offline_from_shared_data(shared_data, flavor, n_train, n_val, n_test):
    ds = load_dataset(MedmnistData(name="medmnist", flavor=flavor, root=str(shared_data / "medmnist")))
    check(ds, 2, 1, 28)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (n_train, n_val, n_test)


def test_medmnist_missing_file_names_the_path(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(MedmnistData(name="medmnist", flavor="breastmnist", root=str(tmp_path)), cache_dir=tmp_path)
    assert str(tmp_path / "breastmnist.npz") in str(err.value) and "zenodo" in str(err.value)
    with pytest.raises(DatasetError, match="unknown MedMNIST flavor 'nopemnist'"):
        load_dataset(MedmnistData(name="medmnist", flavor="nopemnist", root=str(tmp_path)), cache_dir=tmp_path)


def test_cifar10_npz_from_shared_data(shared_data):
    ds = load_dataset(NpzData(name="npz", path=str(shared_data / "cifar10" / "cifar10_subset.npz"), flip=True))
    check(ds, 10, 3, 32)
    assert ds.class_names[0] == "airplane" and ds.flip
    assert torch.bincount(ds.train.labels).tolist() == [1000] * 10


def test_npz_errors(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(DatasetError, match=f"file not found: {missing}"):
        load_dataset(NpzData(name="npz", path=str(missing)))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip file at all")
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset(NpzData(name="npz", path=str(corrupt)))
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros(4, np.int64))
    with pytest.raises(DatasetError, match="test_images and test_labels are required"):
        load_dataset(NpzData(name="npz", path=str(incomplete)))
    bad_label = tmp_path / "bad_label.npz"
    x = np.zeros((4, 8, 8), np.uint8)
    np.savez(
        bad_label,
        train_images=x,
        train_labels=np.array([0, 1, 2, 1]),
        test_images=x,
        test_labels=np.array([0, 1, 0, 1]),
        class_names=np.array(["a", "b"]),
    )
    with pytest.raises(DatasetError, match=r"label 2 is outside the class list \(0..1\)"):
        load_dataset(NpzData(name="npz", path=str(bad_label)))


def test_split_checks():
    with pytest.raises(DatasetError, match="must be uint8"):
        _to_split(np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64), 2, "x", None)
    with pytest.raises(DatasetError, match="2 images but 3 labels"):
        _to_split(np.zeros((2, 4, 4), np.uint8), np.zeros(3, np.int64), 2, "x", None)


def write_folder(root, split, classes, n, size=(20, 12)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_imagefolder(tmp_path):
    write_folder(tmp_path, "train", ["cat", "dog", "fox"], 4)
    write_folder(tmp_path, "val", ["cat", "dog", "fox"], 2)
    ds = load_dataset(ImageFolderData(name="imagefolder", root=str(tmp_path), resolution=16, classes=["fox", "cat"]))
    check(ds, 2, 3, 16)
    assert ds.class_names == ("fox", "cat") and len(ds.train) == 8 and len(ds.test) == 4 and ds.flip
    with pytest.raises(DatasetError, match=r"\['wolf'\] not found"):
        load_dataset(ImageFolderData(name="imagefolder", root=str(tmp_path), classes=["wolf"]))
    with pytest.raises(DatasetError, match="train not found"):
        load_dataset(ImageFolderData(name="imagefolder", root=str(tmp_path / "nope")))
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode .*broken.png"):
        load_dataset(ImageFolderData(name="imagefolder", root=str(tmp_path), resolution=8))


def test_nested_class_balanced_subsets():
    ds = load_dataset(DigitsData(name="digits"))
    labels, c = ds.train.labels, ds.num_classes

    def sub(seed, start, count):
        return subset_indices(labels, c, seed=seed, start=start, count=count, dataset_key=ds.key)

    small, big = sub(0, 0, 10), sub(0, 0, 30)
    assert set(small) < set(big)  # nested
    assert torch.bincount(labels[small], minlength=c).tolist() == [10] * c  # class-balanced
    extra = sub(0, 10, 20)
    assert not set(extra) & set(small) and set(small) | set(extra) == set(big)  # extra follows the base
    assert np.array_equal(sub(0, 0, 10), small)  # deterministic
    assert set(sub(1, 0, 10)) != set(small)  # another seed, another subset
    with pytest.raises(DatasetError, match=r"class '\d' has \d+ training images; 500 per class"):
        real_indices(ds, seed=0, per_class=500)
