"""Explanations of chosen detections: D-RISE (written here), occlusion through captum over a detection score, and
CAM methods through grad-cam with per-detection targets; separate maps for a detection's CATEGORY and LOCATION where
the method allows. `targets` defines what is explained, `methods` holds the registry, `explainer` the
`unirep explain DETECTOR --task <detection task>` page."""
