"""Drum-hit classification from the Hydrogen drum kits (Debian hydrogen-drumkits): 5 classes named from each kit's
drumkit.xml instrument names by the rule in `drum_names`, split **by kit** (the card lists the kits of each split,
so no kit - no recording session, microphone or sample pack - is in two splits). A sample file that two
instruments of a kit use counts once; one that two classes would claim is left out. Override the folder with
UNIREP_HYDROGEN_DRUMKITS_DIR.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.tasks import register_task
from unirep.tasks.audio.base import AudioExamples, AudioTask
from unirep.tasks.audio.drum_names import drum_class
from unirep.tasks.base import SPLITS, ImageSet
from unirep.tasks.offline._common import env_path, missing_data_error, sha256_files

ENV_DIR = "UNIREP_HYDROGEN_DRUMKITS_DIR"
DEFAULT_DIR = Path("/usr/share/hydrogen/data/drumkits")


def kit_samples(kit_dir: Path) -> dict[str, str]:
    """{sample file name: drum class} of one kit, from its drumkit.xml (files on disk only)."""
    xml_path = kit_dir / "drumkit.xml"
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"cannot read {xml_path}: {exc}; reinstall hydrogen-drumkits") from None
    claims: dict[str, set[str | None]] = {}
    for instrument in (e for e in root.iter() if _local(e.tag) == "instrument"):
        names = [c.text or "" for c in instrument if _local(c.tag) == "name"]
        label = drum_class(names[0]) if names else None
        files = [c.text for e in instrument.iter() if _local(e.tag) in ("layer", "instrument")
                 for c in e if _local(c.tag) == "filename" and c.text]
        for name in files:
            claims.setdefault(name, set()).add(label)
    return {name: next(iter(labels)) for name, labels in sorted(claims.items())
            if len(labels) == 1 and None not in labels and (kit_dir / name).is_file()}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@functools.cache
def _find(root: Path, kits: tuple[str, ...], classes: tuple[str, ...]) -> tuple[tuple[Path, ...], tuple[int, ...], str]:
    files, labels = [], []
    for kit in kits:
        kit_dir = root / kit
        if not (kit_dir / "drumkit.xml").is_file():
            raise FileNotFoundError(kit_dir / "drumkit.xml")
        for name, label in kit_samples(kit_dir).items():
            files.append(kit_dir / name)
            labels.append(classes.index(label))
    return tuple(files), tuple(labels), sha256_json({"files": sha256_files(files, root), "labels": labels})


@register_task("hydrogen-drums")
class HydrogenDrumsTask(AudioTask):
    @property
    def kit_splits(self) -> dict[str, list[str]]:
        return {s: list(self.card.extra["kits"][s]) for s in SPLITS}

    def load_clips(self) -> AudioExamples:
        root = env_path(ENV_DIR, DEFAULT_DIR)
        kits = tuple(k for s in SPLITS for k in self.kit_splits[s])
        try:
            files, labels, sha = _find(root, kits, tuple(self.card.classes))
        except FileNotFoundError as exc:
            raise missing_data_error(self.card, exc.args[0] if exc.args else root, ENV_DIR) from None
        ids = [f.relative_to(root).as_posix() for f in files]
        return AudioExamples(ids, np.asarray(labels, dtype=np.int64), [str(f) for f in files], sha)

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray]:
        kit_of = np.array([i.split("/", 1)[0] for i in examples.ids])
        return {s: np.flatnonzero(np.isin(kit_of, self.kit_splits[s])) for s in SPLITS}
