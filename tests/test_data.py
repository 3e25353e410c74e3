"""Tests of timetravel.data: bundled, synthetic and file-based datasets."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from timetravel.data import Dataset, DatasetError, DatasetSplits, load_dataset
from timetravel.data import _files

IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- fixtures


def _write(path: Path, data: bytes, compress: bool) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = (0x08 << 8) | array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def _idx_data(seed: int, n_train: int = 30, n_test: int = 10, side: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    return {
        ("train", "images"): rng.integers(0, 256, size=(n_train, side, side), dtype=np.uint8),
        ("train", "labels"): (np.arange(n_train) % 10).astype(np.uint8),
        ("test", "images"): rng.integers(0, 256, size=(n_test, side, side), dtype=np.uint8),
        ("test", "labels"): (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_idx_dataset(folder: Path, compress: bool, seed: int = 0) -> dict:
    data = _idx_data(seed)
    for key, array in data.items():
        _write(folder / IDX_NAMES[key], _idx_bytes(array), compress)
    return data


def _cifar_records(n: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    planes = images.transpose(0, 3, 1, 2).reshape(n, -1)  # red plane, green plane, blue plane
    return np.concatenate([labels[:, None], planes], axis=1).tobytes(), images, labels


def write_cifar_dataset(folder: Path, compress: bool, meta: list[str] | None = None) -> dict:
    rng = np.random.default_rng(0)
    train_images, train_labels = [], []
    for k in range(1, 6):
        data, images, labels = _cifar_records(4, rng)
        _write(folder / f"data_batch_{k}.bin", data, compress)
        train_images.append(images)
        train_labels.append(labels)
    data, test_images, test_labels = _cifar_records(3, rng)
    _write(folder / "test_batch.bin", data, compress)
    if meta is not None:
        (folder / "batches.meta.txt").write_text("\n".join(meta) + "\n\n")
    return {
        "train": (np.concatenate(train_images), np.concatenate(train_labels)),
        "test": (test_images, test_labels),
    }


def _check_splits(splits: DatasetSplits, channels: int, side: int) -> None:
    for ds in (splits.train, splits.test):
        assert ds.x.dtype == np.float32 and ds.x.shape == (len(ds), channels, side, side)
        assert ds.y.dtype == np.int64 and ds.y.shape == (len(ds),)
        assert ds.images.dtype == np.uint8
        assert ds.images.shape == ((len(ds), side, side) if channels == 1 else (len(ds), side, side, 3))
        assert ds.n_classes == len(ds.class_names)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_split_and_normalisation():
    splits = load_dataset("digits", seed=0)
    _check_splits(splits, 1, 8)
    assert len(splits.train) + len(splits.test) == 1797
    assert len(splits.test) == 360
    assert splits.train.name == "digits" and splits.train.class_names == [str(k) for k in range(10)]
    assert splits.train.images.max() == 255 and splits.train.images.min() == 0
    assert abs(float(splits.train.x.mean())) < 1e-4 and abs(float(splits.train.x.std()) - 1) < 1e-4
    # x is the thumbnail, normalised: same ordering of pixel values
    flat_img = splits.train.images.reshape(-1).astype(float)
    flat_x = splits.train.x.reshape(-1)
    assert np.corrcoef(flat_img, flat_x)[0, 1] > 0.9999
    # stratified: every class's share of the test split matches its share overall
    share_train = np.bincount(splits.train.y, minlength=10) / len(splits.train)
    share_test = np.bincount(splits.test.y, minlength=10) / len(splits.test)
    assert np.abs(share_train - share_test).max() < 0.01


def test_digits_deterministic_under_seed_and_seeds_differ():
    a, b, c = (load_dataset("digits", seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.y, c.train.y)


def test_digits_n_samples_is_stratified_and_scales_the_test_split():
    splits = load_dataset("digits", seed=0, n_samples=500)
    assert len(splits.train) == 500
    assert len(splits.test) == round(360 * 500 / 1437)
    assert np.bincount(splits.train.y, minlength=10).min() >= 45


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "unknown dataset 'nope'; available: digits, synthetic"),
        ({"name": "digits", "n_samples": 5000}, "n_samples=5000 is too large: digits has 1437 training samples"),
        ({"name": "digits", "n_samples": 0}, "n_samples must be a positive integer"),
        ({"name": "digits", "seed": -1}, "seed must be a non-negative integer"),
        ({"name": "digits", "test_fraction": 1.5}, "test_fraction must be a number strictly between 0 and 1"),
        ({"name": "digits", "image_size": 4}, "'digits' does not take option(s) image_size; it takes: test_fraction"),
        ({"name": "synthetic", "n_classes": 1}, "n_classes must be an integer >= 2"),
        ({"name": "synthetic", "class_sep": 0}, "class_sep must be a positive number"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(DatasetError) as info:
        load_dataset(name, **kwargs)
    assert message in str(info.value)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_balance_and_options():
    splits = load_dataset("synthetic", n_samples=300, n_classes=3, image_size=6, test_fraction=0.25, seed=1)
    _check_splits(splits, 1, 6)
    assert len(splits.train) == 300 and len(splits.test) == 100
    assert np.bincount(splits.train.y).tolist() == [100, 100, 100]
    assert splits.train.class_names == ["class 0", "class 1", "class 2"]


def test_synthetic_defaults():
    splits = load_dataset("synthetic")
    assert splits.train.x.shape == (2000, 1, 8, 8) and len(splits.test) == 500 and splits.train.n_classes == 10


def test_synthetic_deterministic_under_seed_and_seeds_differ():
    a, b, c = (load_dataset("synthetic", n_samples=200, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.images, c.train.images)


def test_synthetic_is_learnable_but_not_trivial():
    from sklearn.neighbors import KNeighborsClassifier

    splits = load_dataset("synthetic", n_samples=2000, seed=0)
    flat = lambda ds: ds.x.reshape(len(ds), -1)  # noqa: E731
    model = KNeighborsClassifier(5).fit(flat(splits.train), splits.train.y)
    accuracy = model.score(flat(splits.test), splits.test.y)
    # far above chance (0.1), far from perfect: the classes overlap
    assert 0.6 < accuracy < 0.97, accuracy


def test_synthetic_class_sep_controls_overlap():
    from sklearn.neighbors import NearestCentroid

    def accuracy(sep: float) -> float:
        splits = load_dataset("synthetic", n_samples=1000, class_sep=sep, seed=0)
        flat = lambda ds: ds.x.reshape(len(ds), -1)  # noqa: E731
        return NearestCentroid().fit(flat(splits.train), splits.train.y).score(flat(splits.test), splits.test.y)

    assert accuracy(0.5) + 0.2 < accuracy(3.0)


# --------------------------------------------------------------------------- Dataset validation


def _valid_parts(n: int = 4) -> dict:
    return {
        "name": "t",
        "x": np.zeros((n, 1, 3, 3), np.float32),
        "y": np.zeros(n, np.int64),
        "images": np.zeros((n, 3, 3), np.uint8),
        "class_names": ["a", "b"],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": np.zeros((4, 1, 3, 3), np.float64)}, "x must be a float32 array of shape (N, C, H, W)"),
        ({"y": np.zeros(3, np.int64)}, "y has 3 entries but x has 4 images"),
        ({"y": np.zeros(4, np.int32)}, "y must be an int64 array"),
        ({"images": np.zeros((4, 3, 3, 3), np.uint8)}, "needs images of shape (4, 3, 3)"),
        ({"images": np.zeros((4, 3, 3), np.float32)}, "images must be a uint8 array"),
        ({"y": np.array([0, 1, 2, 0])}, "labels must lie in [0, 2), got values from 0 to 2"),
    ],
)
def test_dataset_validates_its_arrays(change, message):
    parts = {**_valid_parts(), **change}
    with pytest.raises(DatasetError) as info:
        Dataset(**parts)
    assert message in str(info.value)


def test_dataset_accepts_rgb():
    x = np.zeros((2, 3, 4, 4), np.float32)
    ds = Dataset("rgb", x, np.zeros(2, np.int64), np.zeros((2, 4, 4, 3), np.uint8), ["a"])
    assert ds.n_classes == 1 and len(ds) == 2


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_dataset_loads(tmp_path, name, compress):
    data = write_idx_dataset(tmp_path / name, compress)
    splits = load_dataset(name, root=tmp_path / name)
    _check_splits(splits, 1, 5)
    np.testing.assert_array_equal(splits.train.images, data[("train", "images")])
    np.testing.assert_array_equal(splits.train.y, data[("train", "labels")])
    np.testing.assert_array_equal(splits.test.images, data[("test", "images")])
    assert splits.train.name == name
    expected_first = "0" if name == "mnist" else "T-shirt/top"
    assert splits.train.class_names[0] == expected_first and splits.train.n_classes == 10


def test_idx_root_may_be_the_parent_folder(tmp_path):
    write_idx_dataset(tmp_path / "mnist", compress=True)
    assert len(load_dataset("mnist", root=tmp_path).train) == 30


def test_idx_default_root_is_the_datasets_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "datasets_dir", lambda: tmp_path)
    write_idx_dataset(tmp_path / "fashion-mnist", compress=False)
    assert len(load_dataset("fashion_mnist").test) == 10


def test_idx_n_samples_subsamples_stratified(tmp_path):
    write_idx_dataset(tmp_path / "mnist", compress=False)
    splits = load_dataset("mnist", root=tmp_path, n_samples=20, seed=0)
    assert len(splits.train) == 20 and len(splits.test) == round(10 * 20 / 30)
    assert np.bincount(splits.train.y, minlength=10).tolist() == [2] * 10


def test_idx_missing_files_are_all_named_with_their_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "datasets_dir", lambda: tmp_path)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert "4 file(s) missing" in message
    for name in IDX_NAMES.values():
        assert f"- {name} (or {name}.gz)" in message
    assert str(tmp_path / "mnist") in message and "never downloads" in message


def test_idx_only_the_missing_file_is_named(tmp_path):
    write_idx_dataset(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert "1 file(s) missing" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_idx_truncated_data_is_reported(tmp_path, compress):
    data = write_idx_dataset(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.unlink()
    path = _write(path, _idx_bytes(data[("train", "images")])[:-7], compress)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", root=tmp_path)
    assert str(path) in str(info.value)
    assert "truncated: the header promises 750 data bytes for shape (30, 5, 5), found 743" in str(info.value)


def test_idx_truncated_header_and_trailing_bytes(tmp_path):
    data = write_idx_dataset(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">I", 0x0801))
    with pytest.raises(DatasetError, match="truncated IDX header, 4 bytes but the header needs 8"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(data[("train", "labels")]) + b"xx")
    with pytest.raises(DatasetError, match="has trailing bytes"):
        load_dataset("mnist", root=tmp_path)


def test_idx_damaged_gzip_is_reported(tmp_path):
    write_idx_dataset(tmp_path, compress=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", root=tmp_path)
    assert str(path) in str(info.value) and "cannot be read" in str(info.value)


def test_idx_bad_magic_is_reported(tmp_path):
    write_idx_dataset(tmp_path, compress=False)
    # a labels file where the images file should be
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros(30, np.uint8)))
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", root=tmp_path)
    assert f"{path}: bad magic number 0x00000801, expected 0x00000803" in str(info.value)


def test_idx_label_count_and_range_are_checked(tmp_path):
    write_idx_dataset(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(DatasetError, match="9 labels but .* holds 10 images"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.full(10, 10, np.uint8)))
    with pytest.raises(DatasetError, match="labels must be 0..9, found 10"):
        load_dataset("mnist", root=tmp_path)


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_cifar10_loads_with_channel_planes_in_order(tmp_path, compress):
    folder = tmp_path / "cifar-10-batches-bin"
    data = write_cifar_dataset(folder, compress)
    splits = load_dataset("cifar10", root=tmp_path)  # parent folder: searched as cifar-10-batches-bin/
    _check_splits(splits, 3, 32)
    assert len(splits.train) == 20 and len(splits.test) == 3
    np.testing.assert_array_equal(splits.train.images, data["train"][0])
    np.testing.assert_array_equal(splits.train.y, data["train"][1])
    np.testing.assert_array_equal(splits.test.images, data["test"][0])
    assert splits.train.class_names[0] == "airplane"
    # x channel 0 is the red plane: perfectly correlated with the thumbnail's red channel
    red_x = splits.train.x[:, 0].reshape(-1)
    red_img = splits.train.images[..., 0].reshape(-1).astype(float)
    assert np.corrcoef(red_x, red_img)[0, 1] > 0.9999
    means = splits.train.x.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(means, 0.0, atol=1e-4)


def test_cifar10_class_names_from_meta(tmp_path):
    names = [f"thing{k}" for k in range(10)]
    write_cifar_dataset(tmp_path, compress=False, meta=names)
    assert load_dataset("cifar-10", root=tmp_path).train.class_names == names


def test_cifar10_bad_meta_is_reported(tmp_path):
    write_cifar_dataset(tmp_path, compress=False, meta=["a", "b"])
    with pytest.raises(DatasetError, match="batches.meta.txt: expected 10 class names, one per line, found 2"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_missing_files_are_all_named(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "datasets_dir", lambda: tmp_path)
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "6 file(s) missing" in message and str(tmp_path / "cifar-10-batches-bin") in message
    for name in [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]:
        assert name in message
    assert "batches.meta.txt" not in message


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_cifar10_truncated_batch_is_reported(tmp_path, compress):
    write_cifar_dataset(tmp_path, compress=False)
    path = tmp_path / "data_batch_3.bin"
    data = path.read_bytes()[:-100]
    path.unlink()
    path = _write(path, data, compress)
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", root=tmp_path)
    assert f"{path}: 12192 bytes is not a whole, non-zero number of 3073-byte CIFAR-10 records" in str(info.value)


def test_cifar10_bad_label_is_reported(tmp_path):
    write_cifar_dataset(tmp_path, compress=False)
    path = tmp_path / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[0] = 42
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="test_batch.bin: labels must be 0..9, found 42"):
        load_dataset("cifar10", root=tmp_path)
