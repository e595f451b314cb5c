"""Real clips for the audio tests: Tux Paint's spoken descriptions and Hydrogen drum samples (Debian packages),
cut and re-written with soundfile where a test needs files of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

TUXPAINT = Path("/usr/share/tuxpaint/stamps")
DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")


def _tuxpaint_clips(language: str, count: int) -> list[Path]:
    found = sorted(TUXPAINT.rglob(f"*_desc_{language}.ogg"))[:count]
    if len(found) < count:
        pytest.skip("tuxpaint-stamps-default is not installed (sudo apt-get install tuxpaint-stamps-default)")
    return found


@pytest.fixture(scope="session")
def tuxpaint_clips():
    """`tuxpaint_clips(language, count)`: the first `count` Tux Paint description files of `language`."""
    return _tuxpaint_clips


@pytest.fixture(scope="session")
def audio_folder(tmp_path_factory) -> Path:
    """root/<language>/*.wav|flac|ogg: 8 real Tux Paint clips per language for 3 languages, written with soundfile
    in three formats, stereo files kept stereo (the task must mix them down)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("audio-folder")
    formats = ("wav", "flac", "ogg")
    for language in ("fr", "ru", "es"):
        (root / language).mkdir()
        for i, source in enumerate(_tuxpaint_clips(language, 8)):
            data, rate = sf.read(source, dtype="float32")
            sf.write(root / language / f"{source.stem}.{formats[i % 3]}", data, rate)
    return root
