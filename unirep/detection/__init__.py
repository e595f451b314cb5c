"""Object detection: the detection task type (`data.DetectionSet`), the composed-scenes generator, COCO / YOLO
readers, COCO mAP, and the `detection` transfer protocol (frozen backbone + FPN + RetinaNet head)."""
