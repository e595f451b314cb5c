"""Trained detectors behind one interface (`Detector`): torchvision RetinaNet and ultralytics YOLOv8.

The ultralytics adapter (`yolo.py`, AGPL-3.0 library) is the one module of unirep that imports ultralytics, and
only when a YOLO is built or loaded; importing this package imports neither ultralytics nor the detector kinds.
"""

from unirep.detection.detectors.base import (
    DETECTORS,
    Detections,
    Detector,
    detector_class,
    is_detector_dir,
    load_detector,
    register_detector,
)

__all__ = ["DETECTORS", "Detections", "Detector", "detector_class", "is_detector_dir", "load_detector",
           "register_detector"]
