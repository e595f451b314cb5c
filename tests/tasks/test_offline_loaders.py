"""Each offline adapter against an independent read of its source, plus its failure modes: missing data, the
torchvision IDX path, pinned hashes, unsafe pickles, corrupt images, split tables that cannot be met."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unirep.errors import ConfigError, DataError
from unirep.fileio import sha256_file
from unirep.tasks import TASKS, create_task, load_card
from unirep.tasks.offline import animal_mnist, fashion_mnist, textile_defects
from unirep.tasks.offline._common import sha256_arrays


def make_task(name: str, **changes):
    """The registered task with its card changed (e.g. smaller counts for tiny test data)."""
    return TASKS.get(name)(dataclasses.replace(load_card(name), **changes))


# ---------------------------------------------------------------------------------------------- fashion-mnist
def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write `array` (uint8) in the IDX format of the MNIST/Fashion-MNIST files: magic 0x0000 08 <ndim>, then
    big-endian int32 sizes, then the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def tiny_fashion(folder: Path, compress: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.repeat(np.arange(10, dtype=np.uint8), 4),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.tile(np.arange(10, dtype=np.uint8), 2),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_idx_files_go_through_torchvision(tmp_path, monkeypatch, compress):
    from torchvision.datasets import FashionMNIST

    arrays = tiny_fashion(tmp_path / "debian", compress)
    monkeypatch.setenv("UNIREP_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "root"))
    task = make_task("fashion-mnist", counts={"train": 20, "val": 10, "test": 20})
    test = task.split("test")
    # Laid out as torchvision's own download leaves it, and torchvision reads it by itself.
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    direct = FashionMNIST(str(tmp_path / "root"), train=False, download=False)
    assert np.array_equal(direct.data.numpy(), arrays["t10k-images-idx3-ubyte"])
    # The official test split is kept whole; train and val come from the official train split only.
    assert test.ids == [f"test/{i:05d}" for i in range(20)]
    assert all(i.startswith("train/") for s in ("train", "val") for i in task.manifest.splits[s])
    for index in (0, 7, 19):
        image, label = test[index]
        assert np.array_equal(np.asarray(image)[..., 0], arrays["t10k-images-idx3-ubyte"][index])
        assert label == arrays["t10k-labels-idx1-ubyte"][index]
    examples, sha, _ = task._loaded
    images = np.concatenate([arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]])
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]]).astype(np.int64)
    assert sha == sha256_arrays(images, labels)  # independent of .gz or not: same manifest either way


def test_fashion_reuses_an_existing_torchvision_root(tmp_path, monkeypatch):
    arrays = tiny_fashion(tmp_path / "root" / "FashionMNIST" / "raw", compress=False)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("UNIREP_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "root"))
    examples, _ = make_task("fashion-mnist").load_examples()
    assert len(examples) == 60 and np.array_equal(examples.labels[:40], arrays["train-labels-idx1-ubyte"])


def test_fashion_matches_the_debian_files():
    # Independent IDX parse of the real files: 16-byte header for images, 8 for labels.
    def parse(name: str, offset: int) -> np.ndarray:
        return np.frombuffer(gzip.decompress((fashion_mnist.DEBIAN_DIR / f"{name}.gz").read_bytes()), np.uint8, -1,
                             offset)

    task = create_task("fashion-mnist")
    examples, _, _ = task._loaded
    test_images = parse("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    test_labels = parse("t10k-labels-idx1-ubyte", 8)
    official_test = task.split("test")
    assert len(official_test) == 10000 and np.array_equal(official_test.labels, test_labels)
    assert np.bincount(official_test.labels).tolist() == [1000] * 10
    for index in (0, 4321, 9999):
        assert np.array_equal(np.asarray(official_test[index][0])[..., 0], test_images[index])


def test_fashion_missing_names_package_and_download_flag(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("UNIREP_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("UNIREP_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(DataError) as info:
        make_task("fashion-mnist").load_examples()
    message = str(info.value)
    assert "\n" not in message
    assert "`apt-get install dataset-fashion-mnist`" in message
    assert "UNIREP_FASHION_MNIST_DIR" in message and "UNIREP_ALLOW_DOWNLOAD=1" in message


# ------------------------------------------------------------------------------------------- missing data
@pytest.mark.parametrize(
    "task_name, env_var",
    [
        ("animal-mnist", "UNIREP_ANIMAL_MNIST_DIR"),
        ("lfw-faces", "UNIREP_SKIMAGE_DATA_DIR"),
        ("skimage-textures", "UNIREP_SKIMAGE_DATA_DIR"),
        ("textile-defects", "UNIREP_TEXTILE_DIR"),
        ("opencv-digits", "UNIREP_OPENCV_DATA_DIR"),
    ],
)
def test_missing_data_is_one_line_naming_the_provider(tmp_path, monkeypatch, task_name, env_var):
    monkeypatch.setenv(env_var, str(tmp_path))
    task = create_task(task_name)
    with pytest.raises(DataError) as info:
        task.load_examples()
    message = str(info.value)
    assert "\n" not in message
    assert f"`{task.card.provides}`" in message and env_var in message and str(tmp_path) in message


# -------------------------------------------------------------------------------------------- animal-mnist
@pytest.fixture
def animal_copy(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "animal"
    shutil.copytree(animal_mnist.default_dir(), folder)
    monkeypatch.setenv("UNIREP_ANIMAL_MNIST_DIR", str(folder))
    return folder


def test_animal_matches_plain_unpickling_and_labels_are_animals(animal_copy):
    # The files are the pinned release, so an unrestricted pickle.load is safe here and serves as reference.
    with gzip.open(animal_copy / animal_mnist.DATA_FILE) as handle:
        reference = pickle.load(handle)
    examples, sha = create_task("animal-mnist").load_examples()
    assert np.array_equal(np.stack([np.asarray(examples[i][0])[..., 0] for i in (0, 5000, 9999)]),
                          reference[[0, 5000, 9999]])
    assert np.bincount(examples.labels).tolist() == [1000] * 10
    assert sha == create_task("animal-mnist").manifest.data_sha256


def test_animal_sha_mismatch_is_refused(animal_copy):
    path = animal_copy / animal_mnist.LABEL_FILE
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"has sha256 .* expected dec8dba7c469.*pip install --no-deps animal-mnist"):
        create_task("animal-mnist").load_examples()


class _TouchOnLoad:
    """A pickle that creates a file when loaded: stands in for arbitrary code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_unpickler_refuses_code_and_non_arrays(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_TouchOnLoad(marker))
    pickle.loads(payload)  # the payload is real: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()
    (tmp_path / "evil.gz").write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=r"refusing global pathlib.*only numpy arrays"):
        animal_mnist.load_numpy_pickle(tmp_path / "evil.gz")
    assert not marker.exists()
    (tmp_path / "dict.gz").write_bytes(gzip.compress(pickle.dumps({"images": np.zeros(3, np.uint8)})))
    with pytest.raises(DataError, match="holds a dict, expected a numeric numpy array"):
        animal_mnist.load_numpy_pickle(tmp_path / "dict.gz")
    (tmp_path / "ok.gz").write_bytes(gzip.compress(pickle.dumps(np.arange(6, dtype=np.int64).reshape(2, 3))))
    assert animal_mnist.load_numpy_pickle(tmp_path / "ok.gz").tolist() == [[0, 1, 2], [3, 4, 5]]


# -------------------------------------------------------------------------------------- textile-defects
@pytest.fixture
def textile_copy(tmp_path, monkeypatch) -> Path:
    """A small copy of the package's layout: 4 nominal, 2 local, 2 global images."""
    source = textile_defects.default_dir()
    for folder, count in (("nominal", 4), ("local", 2), ("global", 2)):
        (tmp_path / folder).mkdir()
        for path in sorted((source / folder).glob("*.jpg"))[:count]:
            shutil.copy(path, tmp_path / folder / path.name)
    monkeypatch.setenv("UNIREP_TEXTILE_DIR", str(tmp_path))
    return tmp_path


def test_textile_reads_files_lazily_with_folder_labels(textile_copy):
    examples, sha = create_task("textile-defects").load_examples()
    assert examples.ids[:5] == ["nominal/textile_0001.jpg", "nominal/textile_0002.jpg", "nominal/textile_0003.jpg",
                                "nominal/textile_0004.jpg", "local/textile_0001.jpg"]
    assert examples.labels.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    image, label = examples[6]
    reference = Image.open(textile_copy / "global" / "textile_0001.jpg").convert("RGB")
    assert label == 2 and np.array_equal(np.asarray(image), np.asarray(reference))
    assert len(sha) == 64


def test_truncated_image_names_the_file(textile_copy):
    broken = textile_copy / "nominal" / "textile_0003.jpg"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    examples, _ = create_task("textile-defects").load_examples()  # listing and hashing do not decode
    assert examples[3][0].size == (250, 250)  # intact files still load
    with pytest.raises(DataError, match=rf"cannot read image {broken} \(example nominal/textile_0003.jpg\)"):
        examples[2]
    with pytest.raises(DataError, match=str(broken)):  # the same through a split's subset
        examples.subset([1, 2])[1]


# -------------------------------------------------------------------- values against independent readers
def test_sklearn_digits_match_load_digits():
    from sklearn.datasets import load_digits

    reference = load_digits()
    examples, _ = create_task("sklearn-digits").load_examples()
    assert np.array_equal(examples.labels, reference.target)
    for index in (0, 900, 1796):
        pixels = np.asarray(examples[index][0])[..., 0].astype(float)
        assert np.allclose(pixels * 16 / 255, reference.images[index], atol=16 / 255 / 2 + 1e-9)


def test_lfw_faces_match_skimage():
    from skimage.data import lfw_subset

    reference = lfw_subset()
    examples, _ = create_task("lfw-faces").load_examples()
    assert examples.labels.tolist() == [0] * 100 + [1] * 100  # 0 = face, 1 = non-face
    for index in (0, 99, 100, 199):
        assert np.abs(np.asarray(examples[index][0])[..., 0] / 255 - reference[index]).max() <= 0.5 / 255 + 1e-9


def test_opencv_digits_cells_come_from_the_sheet():
    sheet = np.asarray(Image.open("/usr/share/doc/opencv-doc/examples/data/digits.png").convert("L"))
    examples, sha = create_task("opencv-digits").load_examples()
    assert sha == sha256_file("/usr/share/doc/opencv-doc/examples/data/digits.png")
    index = examples.ids.index("r07c42")  # row 7 -> digit 1 (rows 5-9)
    image, label = examples[index]
    assert label == 1 and np.array_equal(np.asarray(image)[..., 0], sheet[140:160, 840:860])
    assert np.bincount(examples.labels).tolist() == [500] * 10


def test_textures_match_skimage_and_bands_do_not_touch():
    import skimage.data

    task = create_task("skimage-textures")
    examples, _, _ = task._loaded
    brick = examples.ids.index("brick/r12c03")
    assert np.array_equal(np.asarray(examples[brick][0])[..., 0], skimage.data.brick()[384:416, 96:128])
    hubble_rgb = skimage.data.hubble_deep_field()[180:692, 244:756]  # centre 512 crop of 872 x 1000
    hubble = np.asarray(Image.fromarray(hubble_rgb).convert("L"))
    patch = examples.ids.index("hubble_deep_field/r00c15")
    assert np.array_equal(np.asarray(examples[patch][0])[..., 0], hubble[0:32, 480:512])
    # Leakage guard: every patch of one split is at least 2 patch rows away from any patch of another split.
    rows = {s: {int(i.split("/r")[1][:2]) for i in task.manifest.splits[s]} for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("val", "test"), ("train", "test")):
        assert min(abs(x - y) for x in rows[a] for y in rows[b]) >= 2


def test_texture_bands_must_not_overlap():
    extra = {"patch_size": 32, "crop": 512, "bands": {"train": [0, 9], "val": [8, 11], "test": [12, 16]}}
    with pytest.raises(ConfigError, match="must be disjoint"):
        make_task("skimage-textures", extra=extra).load_examples()


# ----------------------------------------------------------------------------------------- split tables
def test_counts_too_small_leave_a_class_out():
    task = make_task("sklearn-digits", counts={"train": 897, "val": 5, "test": 600})
    with pytest.raises(DataError, match=r"split 'val' has no example of class\(es\) .* raise counts.val in "
                                        r"tasks/sklearn-digits.yaml"):
        task.split("val")


def test_counts_too_large_are_refused():
    task = make_task("lfw-faces", counts={"train": 150, "val": 40, "test": 60})
    with pytest.raises(DataError, match="asked for 150 examples but only 100 are available"):
        task.split("val")
