"""OpenCV's handwritten digits sheet (`digits.png` from the samples data, Debian package opencv-doc): one
2000x1000 grey image of 50 rows x 100 columns of 20x20 digits, 5 consecutive rows per class 0..9."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from unirep.errors import DataError
from unirep.fileio import sha256_file
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task
from unirep.tasks.offline._common import check_shape, env_path, require_files

ENV_DIR = "UNIREP_OPENCV_DATA_DIR"
DEBIAN_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
SHEET = "digits.png"
CELL, ROWS, COLS, ROWS_PER_CLASS = 20, 50, 100, 5


@functools.cache
def read_sheet(path: Path) -> tuple[np.ndarray, str]:
    """(the sheet as a grey uint8 array, sha256 of the file)."""
    try:
        with Image.open(path) as image:
            sheet = np.asarray(image.convert("L"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}; reinstall it with `apt-get install --reinstall "
                        "opencv-doc`") from None
    return sheet, sha256_file(path)


def cut_cells(sheet: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(digits ROWS*COLS x 20 x 20 in reading order, labels from the row, ids "rRRcCC")."""
    cells = sheet.reshape(ROWS, CELL, COLS, CELL).transpose(0, 2, 1, 3).reshape(ROWS * COLS, CELL, CELL)
    rows = np.repeat(np.arange(ROWS), COLS)
    ids = [f"r{r:02d}c{c:02d}" for r in range(ROWS) for c in range(COLS)]
    return np.ascontiguousarray(cells), (rows // ROWS_PER_CLASS).astype(np.int64), ids


@register_task("opencv-digits")
class OpenCVDigitsTask(Task):
    def load_examples(self) -> tuple[ImageSet, str]:
        (path,) = require_files(self.card, env_path(ENV_DIR, DEBIAN_DIR), [SHEET], ENV_DIR)
        sheet, sha = read_sheet(path)
        check_shape(self.card, sheet, (ROWS * CELL, COLS * CELL), path)
        cells, labels, ids = cut_cells(sheet)
        return ImageSet.from_array(cells, labels, ids, str(path)), sha
