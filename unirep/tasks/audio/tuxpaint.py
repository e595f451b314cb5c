"""Spoken-language identification from Tux Paint's recorded stamp descriptions (Debian tuxpaint-stamps-default).

Every stamp under /usr/share/tuxpaint/stamps may carry spoken descriptions `<stamp>_desc_<lang>.ogg`; the task
keeps the 8 languages with at least 680 clips. One voice reads each language, so language and speaker are
confounded: a representation can score here by telling the 8 voices apart (the card says so).
Override the folder with UNIREP_TUXPAINT_STAMPS_DIR.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from unirep.tasks import register_task
from unirep.tasks.audio.base import AudioExamples, AudioTask
from unirep.tasks.offline._common import env_path, missing_data_error, sha256_files

ENV_DIR = "UNIREP_TUXPAINT_STAMPS_DIR"
DEFAULT_DIR = Path("/usr/share/tuxpaint/stamps")


@functools.cache
def _find(root: Path, languages: tuple[str, ...]) -> tuple[tuple[Path, ...], tuple[int, ...], str]:
    """Every `*_desc_<lang>.ogg` under `root` (one walk of the tree), sorted by relative path, with its label."""
    label_of = {f"_desc_{language}.ogg": label for label, language in enumerate(languages)}
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            suffix = name[name.rfind("_desc_"):] if "_desc_" in name else ""
            if suffix in label_of:
                path = Path(folder) / name
                found.append((path.relative_to(root).as_posix(), path, label_of[suffix]))
    found.sort()
    files = tuple(path for _, path, _ in found)
    return files, tuple(label for _, _, label in found), sha256_files(files, root)


@register_task("tuxpaint-language")
class TuxPaintLanguageTask(AudioTask):
    def load_clips(self) -> AudioExamples:
        root = env_path(ENV_DIR, DEFAULT_DIR)
        if root is None or not root.is_dir():
            raise missing_data_error(self.card, root, ENV_DIR)
        files, labels, sha = _find(root, tuple(self.card.classes))
        if not files:
            raise missing_data_error(self.card, root, ENV_DIR, "no *_desc_<lang>.ogg file found there")
        ids = [f.relative_to(root).as_posix() for f in files]
        return AudioExamples(ids, np.asarray(labels, dtype=np.int64), [str(f) for f in files], sha)
