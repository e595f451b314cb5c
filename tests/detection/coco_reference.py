"""Plain pycocotools COCOeval on predictions and targets given as torchvision-style dicts: the independent
reference the detection tests compare unirep's mAP with (the COCO ground-truth and detection objects built by hand,
boxes converted to COCO's xywh, area = w * h)."""

from __future__ import annotations

import contextlib
import io


def cocoeval_stats(preds, targets, cat_ids=None, num_classes=4) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) from pycocotools alone, the COCO objects built by hand."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, detections = [], []
    for image_id, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, label, score in zip(pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist(),
                                     strict=True):
            detections.append({"image_id": image_id, "category_id": label, "score": score,
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(targets))], "annotations": annotations,
                      "categories": [{"id": c} for c in range(num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])
