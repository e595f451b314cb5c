"""Detection tasks: splits of images with boxes (`unirep.detection.data.DetectionSet`), `task.kind == "detection"`.

`composed_scenes` registers the offline composed-scenes task (real objects on real photos, generated from the seed
in its card); user data in COCO or YOLO format comes in through cards read by `unirep.detection.formats`.
"""

from unirep.tasks.detection import composed_scenes  # noqa: F401 - imported to register the task
from unirep.tasks.detection.base import DetectionTask

__all__ = ["DetectionTask"]
