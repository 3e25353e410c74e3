"""Tests of the user's own data: image folders (``folder:PATH``) and arrays (``arrays:PATH``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from timetravel.cli import main
from timetravel.data import DatasetError, load_arrays, load_dataset, load_image_folder
from timetravel.store import RunStore


def _image(rng: np.random.Generator, size: tuple[int, int], rgb: bool) -> np.ndarray:
    return rng.integers(0, 256, size=(*size, 3) if rgb else size, dtype=np.uint8)


def write_folder(
    root: Path, counts: dict[str, int], *, size=(6, 5), rgb=False, suffix=".png", seed=0
) -> dict[str, list[np.ndarray]]:
    """``root/<class>/<k>.png`` random images; returns them by class."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        written[name] = []
        for k in range(count):
            pixels = _image(rng, size, rgb)
            Image.fromarray(pixels).save(root / name / f"{k:03d}{suffix}")
            written[name].append(pixels)
    return written


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- image folders


def test_folder_loads_classes_in_sorted_order_with_a_stratified_split(tmp_path):
    written = write_folder(tmp_path, {"cat": 10, "ant": 5, "bee": 10})
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "bee" / ".hidden.png").write_bytes(b"junk")
    splits = load_image_folder(root=tmp_path, test_fraction=0.2, seed=0, verbose=False)
    train, test = splits.train, splits.test
    assert train.class_names == ["ant", "bee", "cat"]
    assert len(train) + len(test) == 25 and len(test) == 5
    assert np.bincount(test.y, minlength=3).tolist() == [1, 2, 2]
    assert train.images.shape[1:] == (6, 5) and train.images.dtype == np.uint8
    assert train.x.shape[1:] == (1, 6, 5) and abs(float(train.x.mean())) < 1e-3
    # the thumbnails are the files' pixels (PNG is lossless): every one is among the class's images
    for image, label in zip(train.images, train.y):
        assert any(np.array_equal(image, w) for w in written[train.class_names[label]])


def test_folder_is_deterministic_under_seed(tmp_path):
    write_folder(tmp_path, {"a": 8, "b": 8})
    first, again = (load_image_folder(root=tmp_path, seed=3, verbose=False) for _ in range(2))
    other = load_image_folder(root=tmp_path, seed=4, verbose=False)
    np.testing.assert_array_equal(first.train.images, again.train.images)
    assert not np.array_equal(first.test.images, other.test.images)


def test_folder_with_train_and_test_subfolders_keeps_the_given_split(tmp_path):
    write_folder(tmp_path / "train", {"a": 4, "b": 3})
    write_folder(tmp_path / "val", {"a": 2, "b": 1}, seed=1)
    splits = load_image_folder(root=tmp_path, verbose=False)
    assert (len(splits.train), len(splits.test)) == (7, 3)
    assert splits.test.y.tolist() == [0, 0, 1]


def test_folder_test_class_missing_from_training_is_named(tmp_path):
    write_folder(tmp_path / "train", {"a": 2, "b": 2})
    write_folder(tmp_path / "test", {"a": 1, "z": 1})
    message = _message(load_image_folder, root=tmp_path, verbose=False)
    assert str(tmp_path / "test" / "z") in message and "training classes (a, b)" in message


def test_folder_with_any_colour_image_is_read_as_rgb(tmp_path):
    write_folder(tmp_path, {"a": 3, "b": 3})
    rgb = write_folder(tmp_path, {"c": 3}, rgb=True, suffix=".jpg")
    splits = load_image_folder(root=tmp_path, test_fraction=0.3, verbose=False)
    assert splits.train.images.shape[1:] == (6, 5, 3) and splits.train.x.shape[1] == 3
    assert splits.train.n_classes == 3 and rgb


def test_folder_mixed_sizes_need_image_size(tmp_path):
    write_folder(tmp_path, {"a": 3})
    write_folder(tmp_path, {"b": 3}, size=(9, 7))
    message = _message(load_image_folder, root=tmp_path, verbose=False)
    assert str(tmp_path / "b" / "000.png") in message and "7x9 pixels" in message and "image_size" in message
    splits = load_image_folder(root=tmp_path, image_size=(4, 8), verbose=False)
    assert splits.train.images.shape[1:] == (4, 8) and splits.test.images.shape[1:] == (4, 8)
    assert load_image_folder(root=tmp_path, image_size=5, verbose=False).train.x.shape[1:] == (1, 5, 5)


def test_folder_turns_camera_photos_upright(tmp_path):
    """A photo stored 6 wide x 4 high with EXIF orientation 6 (turned 90 degrees) is shown 4 wide x 6 high."""
    write_folder(tmp_path, {"a": 2}, size=(6, 4))
    stored = np.zeros((4, 6), np.uint8)
    stored[0, 0] = 255  # top left as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "b").mkdir()
    for k in range(2):
        Image.fromarray(stored).save(tmp_path / "b" / f"{k}.png", exif=exif)
    splits = load_image_folder(root=tmp_path, test_fraction=0.5, verbose=False)
    upright = [img for img, y in zip(splits.train.images, splits.train.y) if y == 1][0]
    assert splits.train.images.shape[1:] == (6, 4)
    np.testing.assert_array_equal(upright, np.rot90(stored, -1))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"this is not a png"), "cannot be read as an image"),
        (lambda p: p.write_bytes(p.read_bytes()[:60]), "cannot be"),
    ],
    ids=["garbage", "truncated"],
)
def test_folder_unreadable_image_is_named(tmp_path, damage, message):
    write_folder(tmp_path, {"a": 3, "b": 3}, size=(32, 32))
    bad = tmp_path / "b" / "001.png"
    damage(bad)
    text = _message(load_image_folder, root=tmp_path, test_fraction=0.5, verbose=False)
    assert str(bad) in text and message in text and "remove or replace the file" in text


def test_folder_class_without_images_is_named(tmp_path):
    write_folder(tmp_path, {"a": 3})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    message = _message(load_image_folder, root=tmp_path, verbose=False)
    assert str(tmp_path / "empty") in message and "holds no images" in message


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "no class subfolders"),
        (lambda p: None, "no such folder"),
    ],
)
def test_folder_missing_or_flat_is_explained(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    assert message in _message(load_image_folder, root=root, verbose=False)


def test_folder_n_samples_reads_a_stratified_subset(tmp_path):
    write_folder(tmp_path, {"a": 10, "b": 10})
    splits = load_image_folder(root=tmp_path, n_samples=8, verbose=False)
    assert len(splits.train) == 8 and np.bincount(splits.train.y).tolist() == [4, 4]


def test_load_dataset_takes_folder_and_arrays_specs(tmp_path):
    write_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    via_spec = load_dataset(f"folder:{tmp_path / 'imgs'}", seed=1, verbose=False)
    via_root = load_dataset("folder", root=tmp_path / "imgs", seed=1, verbose=False)
    np.testing.assert_array_equal(via_spec.train.images, via_root.train.images)
    assert via_spec.train.name == f"folder:{tmp_path / 'imgs'}"
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4, 4), np.uint8), y=np.arange(6) % 2)
    assert len(load_dataset(f"arrays:{tmp_path / 'd.npz'}", test_fraction=0.5).test) == 3
    assert "do not pass root" in _message(load_dataset, f"folder:{tmp_path}", root=tmp_path)
    assert "folder:PATH" in _message(load_dataset, "digits:somewhere")
    assert "needs its folder" in _message(load_dataset, "folder")
    assert "does not take option(s) image_size" in _message(load_dataset, "digits", image_size=4)


# --------------------------------------------------------------------------- arrays


def test_arrays_npz_uint8_with_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 7, 7), dtype=np.uint8)
    y = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(["w", "x", "y", "z"]))
    splits = load_arrays(root=tmp_path / "d.npz", test_fraction=0.25)
    assert splits.train.class_names == ["w", "x", "y", "z"] and (len(splits.train), len(splits.test)) == (15, 5)
    rows = {x[i].tobytes(): y[i] for i in range(20)}
    assert all(rows[img.tobytes()] == label for img, label in zip(splits.train.images, splits.train.y))


@pytest.mark.parametrize(
    ("x", "expected_images"),
    [
        (np.full((4, 3, 5, 6), 0.5, np.float32), (4, 5, 6, 3)),  # channels first, floats in 0..1
        (np.full((4, 5, 6, 3), 7, np.int32), (4, 5, 6, 3)),  # channels last, ints in 0..255
        (np.full((4, 1, 5, 6), 0.0, np.float64), (4, 5, 6)),  # one channel first
        (np.full((4, 5, 6, 1), 9, np.uint8), (4, 5, 6)),  # one channel last
    ],
    ids=["chw-float01", "hwc-int", "1hw-float", "hw1-uint8"],
)
def test_arrays_image_layouts_and_dtypes(tmp_path, x, expected_images):
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]), x_test=x[:2], y_test=np.array([1, 0]))
    splits = load_arrays(root=tmp_path / "d.npz")
    assert splits.train.images.shape == expected_images and splits.test.images.shape == (2, *expected_images[1:])
    value = {np.float32: 128, np.int32: 7, np.float64: 0, np.uint8: 9}[x.dtype.type]
    assert (splits.train.images == value).all()


def test_arrays_float_outside_unit_range_are_scaled(tmp_path, caplog):
    x = np.linspace(-2, 2, 4 * 9).reshape(4, 3, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    splits = load_arrays(root=tmp_path / "d.npz", test_fraction=0.5)
    both = np.concatenate([splits.train.images, splits.test.images])
    assert both.min() == 0 and both.max() == 255 and "scaled linearly" in caplog.text


def test_arrays_string_labels_and_folder_of_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((6, 4, 4), np.uint8))
    np.save(tmp_path / "y.npy", np.array(["dog", "cat", "dog", "cat", "eel", "eel"]))
    splits = load_arrays(root=tmp_path, test_fraction=0.5)
    assert splits.train.class_names == ["cat", "dog", "eel"]
    assert sorted(splits.train.y.tolist() + splits.test.y.tolist()) == [0, 0, 1, 1, 2, 2]


def test_arrays_image_size_resizes(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 10, 12, 3), np.uint8), y=np.array([0, 1, 0, 1]))
    splits = load_arrays(root=tmp_path / "d.npz", image_size=(5, 6), test_fraction=0.5)
    assert splits.train.images.shape[1:] == (5, 6, 3)


@pytest.mark.parametrize(
    ("arrays", "where", "message"),
    [
        ({"x": np.zeros((4, 16)), "y": np.zeros(4, int)}, "d.npz:x", "images must have shape (N, H, W)"),
        ({"x": np.zeros((4, 2, 5, 5)), "y": np.zeros(4, int)}, "d.npz:x", "C = 1 or 3, got (4, 2, 5, 5)"),
        ({"x": np.zeros((4, 3, 3), complex), "y": np.zeros(4, int)}, "d.npz:x", "got dtype complex128"),
        ({"x": np.full((4, 3, 3), 300), "y": np.zeros(4, int)}, "d.npz:x", "must lie in 0..255, got 300..300"),
        ({"x": np.full((4, 3, 3), np.nan), "y": np.zeros(4, int)}, "d.npz:x", "NaN or infinite"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(3, int)}, "d.npz:y", "shape (4,), one per image, got (3,)"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4)}, "d.npz:y", "got dtype float64 (convert with y.astype(int))"),
        ({"x": np.zeros((4, 3, 3)), "y": -np.ones(4, int)}, "d.npz:y", "class ids must be >= 0"),
        ({"x": np.zeros((4, 3, 3))}, "d.npz", "no y array"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4, int), "x_test": np.zeros((1, 3, 3))}, "d.npz",
         "x_test and y_test come together"),
        ({"x": np.zeros((4, 3, 3)), "y": np.arange(4), "class_names": np.array(["a", "b"])}, "d.npz:y",
         "class id 3 has no entry in class_names (2 names)"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4, int), "x_test": np.zeros((2, 5, 5)), "y_test": np.zeros(2, int)},
         "d.npz:x_test", "test images are (5, 5) but training images are (3, 3)"),
    ],
    ids=["flat", "channels", "complex", "int-range", "nan", "y-length", "y-float", "y-negative", "no-y",
         "x_test-alone", "class-names", "test-size"],
)
def test_arrays_bad_contents_name_the_key(tmp_path, arrays, where, message):
    np.savez(tmp_path / "d.npz", **arrays)
    text = _message(load_arrays, root=tmp_path / "d.npz")
    assert str(tmp_path / where) in text and message in text


def test_arrays_bad_files_are_named(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "cannot be read as an .npz archive" in _message(load_arrays, root=tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "holds a single array" in _message(load_arrays, root=tmp_path / "one.npy")
    np.save(tmp_path / "x.npy", np.array([{"a": 1}] * 3, dtype=object))
    np.save(tmp_path / "y.npy", np.zeros(3, int))
    text = _message(load_arrays, root=tmp_path)
    assert str(tmp_path / "x.npy") in text and "pickle" in text
    assert "no such file or folder" in _message(load_arrays, root=tmp_path / "absent.npz")


# --------------------------------------------------------------------------- end to end


def test_cli_trains_on_an_image_folder_with_thumbnails(tmp_path, capsys):
    write_folder(tmp_path / "imgs", {"circle": 12, "square": 12}, size=(12, 10), rgb=True)
    out = tmp_path / "run"
    assert main(["-q", "train", "--dataset", f"folder:{tmp_path / 'imgs'}", "--image-size", "8", "--epochs", "2",
                 "--embedding-dim", "8", "--out", str(out)]) == 0
    store = RunStore(out)
    assert store.manifest["train"]["noise"] == "none" and not store.manifest.get("noise")  # the user's labels as given
    assert store.class_names == ["circle", "square"] and store.epochs == [0, 1]
    thumbs = np.load(out / "thumbs.npy", allow_pickle=False)
    assert thumbs.shape == (store.n_samples, 8, 8, 3) and thumbs.dtype == np.uint8
    assert store.manifest["train"]["image_size"] == 8
    assert main(["-q", "train", "--out", str(out), "--epochs", "3", "--resume"]) == 0
    assert RunStore(out).epochs == [0, 1, 2]
    assert "read images" not in capsys.readouterr().err  # -q silences the progress bars
    assert main(["-q", "train", "--dataset", "arrays:/nonexistent.npz", "--out", str(tmp_path / "r2")]) == 2
    assert "/nonexistent.npz: no such file or folder" in capsys.readouterr().err
