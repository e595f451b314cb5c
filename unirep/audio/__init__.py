"""Audio as input to image representations: clips read as float32 mono at a chosen rate (`io`), a log-mel
front-end that turns a clip into the uint8 3-channel image every unirep image backbone takes (`frontend`), and
the clip sets that waveform backbones read (`clips`). The audio tasks themselves live in `unirep.tasks.audio`."""
