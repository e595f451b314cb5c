"""Tiny copies of each standard dataset in its real on-disk format (CIFAR pickle batches, SVHN / Flowers /
Stanford Cars .mat files, VOC annotation folders, torchvision folder layouts, ...), written under a temporary data
root. Each writer returns what the test should find (class names, a few expected labels) so the assertions
check the adapter against the files written, not against itself.

Writers are keyed by adapter class name; every card in tasks/standard/ names one through the registry.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

WRITERS = {}
RNG_SEED = 1234


def writer(*adapter_names: str):
    def decorator(function):
        for name in adapter_names:
            WRITERS[name] = function
        return function
    return decorator


def jpeg(path: Path, value: int, size: int = 8) -> Path:
    """A small solid-colour JPEG whose red channel encodes `value` (to check which file was read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value % 256, 40, 200)).save(path, quality=95)
    return path


def png(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value % 256, 90, 10)).save(path)
    return path


def lines(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")


# --- array formats -------------------------------------------------------------------------------------------
def _cifar_batch(labels: list[int], label_key: str, start: int) -> dict:
    rng = np.random.default_rng(RNG_SEED + start)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return {"batch_label": "fixture", label_key: labels, "data": data,
            "filenames": [f"img_{start + i}.png" for i in range(len(labels))]}


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


@writer("CIFAR10Task")
def write_cifar10(root: Path, card=None) -> dict:
    """5 train batches x 6 images (3 per class), a test batch with one image per class, batches.meta."""
    folder = root / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train_labels = [i % 10 for i in range(30)]
    batches = []
    for b in range(5):
        batch = _cifar_batch(train_labels[6 * b: 6 * b + 6], "labels", 6 * b)
        _pickle(folder / f"data_batch_{b + 1}", batch)
        batches.append(batch)
    test = _cifar_batch(list(range(10)), "labels", 100)
    _pickle(folder / "test_batch", test)
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 6, "num_vis": 3072})
    return {"classes": names, "first_train_row": batches[0]["data"][0], "first_train_label": 0,
            "test_labels": list(range(10))}


@writer("CIFAR100Task")
def write_cifar100(root: Path, card=None) -> dict:
    """All 100 names in meta; images of 4 classes: train 12 (3 each), test 4 (1 each)."""
    folder = root / "cifar-100-python"
    fine = list(card.classes)  # the real meta file lists all 100 fine label names
    used = [7, 20, 55, 99]
    train = _cifar_batch([used[i % 4] for i in range(12)], "fine_labels", 0)
    train["coarse_labels"] = [0] * 12
    test = _cifar_batch(used, "fine_labels", 50)
    test["coarse_labels"] = [0] * 4
    _pickle(folder / "train", train)
    _pickle(folder / "test", test)
    _pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": [f"c{i}" for i in range(20)]})
    return {"classes": fine, "first_train_row": train["data"][0], "first_train_label": 7, "test_labels": used}


@writer("SVHNTask")
def write_svhn(root: Path, card=None) -> dict:
    """train_32x32.mat (12 images, labels 1..10 where 10 is digit 0) and test_32x32.mat (5 images)."""
    rng = np.random.default_rng(RNG_SEED)
    for split, n in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        labels = np.array([[10 if i % 10 == 0 else i % 10] for i in range(n)], dtype=np.uint8)
        (root / "svhn").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "svhn" / f"{split}_32x32.mat", {"X": images, "y": labels})
        if split == "train":
            first = images[:, :, :, 0]
    return {"first_train_image": first, "train_labels_head": [0, 1, 2]}


@writer("Flowers102Task")
def write_flowers102(root: Path, card=None) -> dict:
    """15 images of 3 classes (labels 1, 2, 102); setid.mat: 2 train, 1 val, 2 test per class."""
    folder = root / "flowers-102"
    classes = [1, 2, 102]
    labels = np.array([classes[i // 5] for i in range(15)], dtype=np.uint8)
    for i in range(15):
        jpeg(folder / "jpg" / f"image_{i + 1:05d}.jpg", i)
    ids = np.arange(1, 16).reshape(3, 5)
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": labels[None, :]})
    scipy.io.savemat(folder / "setid.mat", {"trnid": ids[:, :2].reshape(1, -1), "valid": ids[:, 2:3].reshape(1, -1),
                                            "tstid": ids[:, 3:].reshape(1, -1)})
    return {"label_of": {"flowers-102/jpg/image_00001.jpg": "pink primrose",
                         "flowers-102/jpg/image_00011.jpg": "blackberry lily"}}


# --- torchvision folder layouts ------------------------------------------------------------------------------
@writer("Food101Task")
def write_food101(root: Path, card=None) -> dict:
    folder = root / "food-101"
    classes = ["apple_pie", "hamburger", "waffles"]
    meta = {"train": {}, "test": {}}
    for c, name in enumerate(classes):
        for i in range(7):
            split = "train" if i < 5 else "test"
            jpeg(folder / "images" / name / f"{100 + i}.jpg", 10 * c + i)
            meta[split].setdefault(name, []).append(f"{name}/{100 + i}")
    for split, content in meta.items():
        (folder / "meta").mkdir(parents=True, exist_ok=True)
        (folder / "meta" / f"{split}.json").write_text(json.dumps(content))
    lines(folder / "meta" / "classes.txt", classes)
    return {"label_of": {"food-101/images/hamburger/100.jpg": "hamburger"}}


def _mat_struct(records: list[dict]) -> np.ndarray:
    dtype = [(key, object) for key in records[0]]
    out = np.zeros((1, len(records)), dtype=dtype)
    for i, record in enumerate(records):
        for key, value in record.items():
            out[0, i][key] = value
    return out


@writer("StanfordCarsTask")
def write_stanford_cars(root: Path, card=None) -> dict:
    """devkit/cars_meta.mat, devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat as MATLAB structs."""
    folder = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    for split, per_class, mat in (("train", 5, folder / "devkit" / "cars_train_annos.mat"),
                                  ("test", 2, folder / "cars_test_annos_withlabels.mat")):
        records = []
        for c in range(3):
            for i in range(per_class):
                fname = f"{len(records) + 1:05d}.jpg"
                jpeg(folder / f"cars_{split}" / fname, 30 * c + i)
                records.append({"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 7, "bbox_y2": 7, "class": c + 1, "fname": fname})
        scipy.io.savemat(mat, {"annotations": _mat_struct(records)})
    return {"classes": names, "label_of": {"stanford_cars/cars_train/00006.jpg": "Acura RL Sedan 2012"}}


@writer("FGVCAircraftTask")
def write_fgvc_aircraft(root: Path, card=None) -> dict:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "Boeing 717", "F-16A/B"]
    lines(data / "variants.txt", variants)
    image_id = 1000000
    for split, per_class in (("train", 2), ("val", 1), ("test", 1)):
        rows = []
        for variant in variants:
            for _ in range(per_class):
                jpeg(data / "images" / f"{image_id}.jpg", image_id)
                rows.append(f"{image_id} {variant}")
                image_id += 1
        lines(data / f"images_variant_{split}.txt", rows)
    return {"classes": variants, "label_of": {"fgvc-aircraft-2013b/data/images/1000002.jpg": "Boeing 717"}}


@writer("DTDTask")
def write_dtd(root: Path, card=None) -> dict:
    """labels/{train,val,test}1.txt (2/1/1 per class); the val file lists its classes in another order."""
    base = root / "dtd" / "dtd"
    classes = ["banded", "zigzagged", "dotted"]
    counter = 0
    for split, per_class in (("train", 2), ("val", 1), ("test", 1)):
        rows = []
        order = classes if split != "val" else classes[::-1]
        for name in order:
            for _ in range(per_class):
                counter += 1
                jpeg(base / "images" / name / f"{name}_{counter:04d}.jpg", counter)
                rows.append(f"{name}/{name}_{counter:04d}.jpg")
        lines(base / "labels" / f"{split}1.txt", rows)
    return {"label_of": {"dtd/dtd/images/zigzagged/zigzagged_0003.jpg": "zigzagged",
                         "dtd/dtd/images/dotted/dotted_0007.jpg": "dotted"}}


@writer("OxfordPetsTask")
def write_oxford_pets(root: Path, card=None) -> dict:
    """annotations/{trainval,test}.txt with 'Image CLASS-ID SPECIES BREED ID' rows for 3 breeds (ids 1, 2, 6)."""
    base = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 6, 1)]
    for split, per_class, offset in (("trainval", 5, 0), ("test", 2, 100)):
        rows = []
        for raw, class_id, species in breeds:
            for i in range(per_class):
                image = f"{raw}_{offset + i + 1}"
                jpeg(base / "images" / f"{image}.jpg", class_id * 10 + i)
                rows.append(f"{image} {class_id} {species} 1")
        lines(base / "annotations" / f"{split}.txt", rows)
    return {"label_of": {"oxford-iiit-pet/images/Bengal_1.jpg": "Bengal",
                         "oxford-iiit-pet/images/american_bulldog_101.jpg": "American Bulldog"}}


@writer("EuroSATTask")
def write_eurosat(root: Path, card=None) -> dict:
    for c, name in enumerate(["Forest", "Highway", "SeaLake"]):
        for i in range(8):
            jpeg(root / "eurosat" / "2750" / name / f"{name}_{i + 1}.jpg", 20 * c + i)
    return {"label_of": {"eurosat/2750/Highway/Highway_3.jpg": "Highway"}}


def _clevr_scene(name: str, depths: list[float]) -> dict:
    return {"image_filename": name, "objects": [{"pixel_coords": [10, 20, d], "shape": "cube"} for d in depths]}


@writer("CLEVRCountTask", "CLEVRDistanceTask")
def write_clevr(root: Path, card=None) -> dict:
    """images/{train,val}/*.png and scenes JSON: 12 train and 6 val scenes with 3-5 objects at chosen depths."""
    base = root / "clevr" / "CLEVR_v1.0"
    nearest = [7.0, 8.2, 8.7, 9.2, 9.7, 12.0]  # one per distance bin 0..5
    expected = {}
    for split, n in (("train", 12), ("val", 6)):
        scenes = []
        for i in range(n):
            name = f"CLEVR_{split}_{i:06d}.png"
            png(base / "images" / split / name, i)
            count = 3 + i % 3
            depths = [nearest[i % 6]] + [13.0] * (count - 1)
            scenes.append(_clevr_scene(name, depths))
            expected[f"clevr/CLEVR_v1.0/images/{split}/{name}"] = (count - 3, i % 6)
        (base / "scenes").mkdir(parents=True, exist_ok=True)
        (base / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"info": {}, "scenes": scenes}))
    return {"count_and_distance": expected}


@writer("SUN397Task")
def write_sun397(root: Path, card=None) -> dict:
    base = root / "SUN397"
    classes = ["/a/abbey", "/b/bakery/shop", "/c/campus"]
    lines(base / "ClassName.txt", classes)
    partitions = {"Training_01.txt": [], "Testing_01.txt": []}
    for c, cls in enumerate(classes):
        for i in range(7):
            rel = f"{cls}/sun_{c}{i:03d}abc.jpg"
            jpeg(base / rel.lstrip("/"), 10 * c + i)
            partitions["Training_01.txt" if i < 5 else "Testing_01.txt"].append(rel)
    jpeg(base / "a" / "abbey" / "sun_unlisted.jpg", 1)  # in no partition: must be ignored
    for name, rows in partitions.items():
        lines(base / "Partitions" / name, rows)
    return {"classes": ["abbey", "bakery/shop", "campus"],
            "label_of": {"SUN397/b/bakery/shop/sun_1000abc.jpg": "bakery/shop",
                         "SUN397/b/bakery/shop/sun_1005abc.jpg": "bakery/shop"}}


# --- documented folder layouts -------------------------------------------------------------------------------
@writer("Caltech101Task")
def write_caltech101(root: Path, card=None) -> dict:
    """101_ObjectCategories with 3 folders x 5 images and a split manifest in the repository's format."""
    base = root / "caltech101" / "101_ObjectCategories"
    names = ["BACKGROUND_Google", "Faces", "accordion"]
    for c, name in enumerate(names):
        for i in range(5):
            jpeg(base / name / f"image_{i + 1:04d}.jpg", 10 * c + i)
    manifest = {"task": "caltech101", "classes": {n: {"train": [1, 3, 5], "test": [2, 4]} for n in names}}
    path = root / "caltech101-fixture-split.json"
    path.write_text(json.dumps(manifest))
    return {"manifest": str(path), "label_of": {"Faces/image_0003.jpg": "Faces"},
            "test_ids": sorted(f"{n}/image_{k:04d}.jpg" for n in names for k in (2, 4))}


@writer("Caltech256Task")
def write_caltech256(root: Path, card=None) -> dict:
    base = root / "caltech256" / "256_ObjectCategories"
    for c, name in enumerate(["001.ak47", "002.american-flag", "257.clutter"]):
        for i in range(7):
            jpeg(base / name / f"{name[:3]}_{i + 1:04d}.jpg", 10 * c + i)
    (base / "001.ak47" / "notes.txt").write_text("not an image")  # stray files exist in the real archive
    return {"classes": ["ak47", "american-flag", "clutter"]}


@writer("MIT67Task")
def write_mit67(root: Path, card=None) -> dict:
    base = root / "mit67"
    train, test = [], []
    for c, name in enumerate(["bakery", "kitchen", "winecellar"]):
        for i in range(7):
            rel = f"{name}/{name}_{i:03d}.jpg"
            jpeg(base / "Images" / rel, 10 * c + i)
            (train if i < 5 else test).append(rel)
    lines(base / "TrainImages.txt", train)
    lines(base / "TestImages.txt", test)
    return {"classes": ["bakery", "kitchen", "winecellar"],
            "label_of": {"mit67/Images/kitchen/kitchen_006.jpg": "kitchen"}}


@writer("Actions40Task")
def write_actions40(root: Path, card=None) -> dict:
    """JPEGImages + ImageSplits/<action>_{train,test}.txt for every action; 3 actions have images."""
    base = root / "stanford40"
    used = {"applauding": 7, "phoning": 7, "writing_on_a_book": 7}
    for action in card.classes:
        n = used.get(action, 0)
        files = [f"{action}_{i + 1:03d}.jpg" for i in range(n)]
        for i, f in enumerate(files):
            jpeg(base / "JPEGImages" / f, i)
        lines(base / "ImageSplits" / f"{action}_train.txt", files[:5])
        lines(base / "ImageSplits" / f"{action}_test.txt", files[5:])
    return {"label_of": {"stanford40/JPEGImages/phoning_006.jpg": "phoning"}}


@writer("CUB200Task")
def write_cub200(root: Path, card=None) -> dict:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "200.Common_Yellowthroat"]
    images, labels, split = [], [], []
    k = 0
    for c, cls in enumerate(classes):
        for i in range(7):
            k += 1
            rel = f"{cls}/{cls[4:]}_{i:04d}.jpg"
            jpeg(base / "images" / rel, k)
            images.append(f"{k} {rel}")
            labels.append(f"{k} {c + 1}")
            split.append(f"{k} {1 if i < 5 else 0}")
    lines(base / "images.txt", images)
    lines(base / "image_class_labels.txt", labels)
    lines(base / "train_test_split.txt", split)
    lines(base / "classes.txt", [f"{c + 1} {cls}" for c, cls in enumerate(classes)])
    return {"classes": [c[4:] for c in classes],
            "label_of": {"CUB_200_2011/images/002.Laysan_Albatross/Laysan_Albatross_0006.jpg": "Laysan_Albatross"}}


@writer("BirdsnapTask")
def write_birdsnap(root: Path, card=None) -> dict:
    """species.txt (tab-separated), test_images.txt (header 'path'), download/images/<dir>/<file>.jpg; one test
    image listed but never downloaded (dead Flickr link) and one species with no image folder."""
    base = root / "birdsnap"
    species = [(3, "Acadian Flycatcher", "Empidonax virescens", "Acadian_Flycatcher"),
               (1, "Abert's Towhee", "Pipilo aberti", "Aberts_Towhee"),
               (2, "Acorn Woodpecker", "Melanerpes formicivorus", "Acorn_Woodpecker")]
    lines(base / "species.txt", ["id\tcommon\tscientific\tdir"] + ["\t".join(map(str, s)) for s in species])
    test = ["path"]
    for c, (_, _, _, folder) in enumerate(species):
        for i in range(7):
            jpeg(base / "download" / "images" / folder / f"{1000 * c + i}.jpg", 10 * c + i)
            if i >= 5:
                test.append(f"{folder}/{1000 * c + i}.jpg")
    test.append("Acorn_Woodpecker/99999.jpg")
    lines(base / "test_images.txt", test)
    return {"classes": ["Aberts_Towhee", "Acorn_Woodpecker", "Acadian_Flycatcher"]}


@writer("RESISC45Task")
def write_resisc45(root: Path, card=None) -> dict:
    for c, name in enumerate(["airport", "beach", "wetland"]):
        for i in range(8):
            jpeg(root / "NWPU-RESISC45" / name / f"{name}_{i + 1:03d}.jpg", 20 * c + i)
    return {"label_of": {"NWPU-RESISC45/beach/beach_002.jpg": "beach"}}


# --- multi-label ---------------------------------------------------------------------------------------------
def _voc_annotation(path: Path, filename: str, objects: list[tuple[str, int]]) -> None:
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
             "<size><width>8</width><height>8</height><depth>3</depth></size>"]
    for name, difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>7</xmax>"
                     "<ymax>7</ymax></bndbox></object>")
    parts.append("</annotation>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))


def _voc(root: Path, year: str, sets: dict[str, list[list[tuple[str, int]]]]) -> dict:
    base = root / "VOCdevkit" / f"VOC{year}"
    expected, k = {}, 0
    for image_set, images in sets.items():
        ids = []
        for objects in images:
            k += 1
            image_id = f"{year}_{k:06d}"
            jpeg(base / "JPEGImages" / f"{image_id}.jpg", k)
            _voc_annotation(base / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", objects)
            ids.append(image_id)
            expected[image_id] = objects
        lines(base / "ImageSets" / "Main" / f"{image_set}.txt", ids)
    return {"objects": expected}


@writer("VOC2007Task")
def write_voc2007(root: Path, card=None) -> dict:
    """train/val/test with 4 images each; image 1 has a difficult-only dog and a difficult + normal cat."""
    pattern = [[("cat", 0), ("cat", 1), ("dog", 1)], [("dog", 0), ("person", 0)], [("person", 0)],
               [("cat", 0), ("dog", 0), ("person", 0)]]
    return _voc(root, "2007", {"train": pattern, "val": pattern[::-1], "test": pattern})


@writer("VOC2012Task")
def write_voc2012(root: Path, card=None) -> dict:
    """train 6 images (every image has cat, dog and person, so any val carved out keeps each class), val 4."""
    every = [("cat", 0), ("dog", 0), ("person", 0)]
    val = [[("cat", 0)], [("dog", 0), ("person", 1)], [("person", 0)], [("cat", 0), ("dog", 0)]]
    return _voc(root, "2012", {"train": [every] * 6, "val": val})


@writer("NUSWideObjectTask")
def write_nuswide(root: Path, card=None) -> dict:
    base = root / "nuswide-obj"
    rows = {"train": [], "test": []}
    for i in range(14):
        split = "train" if i < 10 else "test"
        rel = f"{split}/{i:04d}.jpg"
        jpeg(base / "images" / rel, i)
        labels = "bear;zebra" if i % 2 else "zebra;cat;bear"
        rows[split].append(f"{rel},{labels}")
    for split, content in rows.items():
        lines(base / f"{split}.csv", ["path,labels", *content])
    return {"targets_of": {"train/0001.jpg": {"bear", "zebra"}, "train/0002.jpg": {"bear", "cat", "zebra"}}}
