"""YOLOv8 (ultralytics, anchor-free) as a unirep `Detector`: THE ONE module of unirep that imports ultralytics.

Licence: ultralytics is AGPL-3.0. unirep keeps it an optional extra (`pip install unirep[yolo]`) and imports it only
here, lazily, inside the functions that build, train, load or validate a YOLO; importing any other unirep module
never imports it (tests/detection/test_detectors_yolo.py checks this in a fresh interpreter).

Offline: every ultralytics call runs inside `ultralytics_environment()`, which sets, before the import and for the
call, YOLO_OFFLINE=1 (no DNS look-ups: `is_online()` is False), YOLO_AUTOINSTALL=false (no pip), a process-wide
temporary YOLO_CONFIG_DIR holding `Ultralytics/Arial.ttf` (matplotlib's DejaVuSans.ttf copied there: training calls
`check_font` even with plots=False, and would download Arial otherwise) and its settings file, and
ULTRALYTICS_SAFE_LOAD=1 (see below); training passes plots=False. The config dir lives until the process exits:
ultralytics reads it once, at import.

Safe loading: a full ultralytics `.pt` is a pickle (`torch.load(weights_only=False)` would run whatever it holds).
A `.pt` a user hands in is read only through ultralytics' own safe loader, `torch_safe_load(path, safe_only=True)`
(`weights_only=True` with an allow-list of ultralytics/torch classes); ULTRALYTICS_SAFE_LOAD=1 makes ultralytics'
internal loads (a resumed training's last.pt) use it too. unirep's own YOLO checkpoints are safetensors state dicts
that load strictly into `DetectionModel(yaml, nc=...)`; a checkpoint for another number of classes is refused in
one line.

Example:
    >>> detector = YOLODetector.build(("a", "b"), {"model_yaml": "yolov8n.yaml"})
    >>> boxes, scores = detector.raw(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
    >>> boxes.shape, scores.shape  # one box per cell of the stride-8/16/32 grids: 256 + 64 + 16
    (torch.Size([1, 336, 4]), torch.Size([1, 336, 2]))
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unirep.detection.detectors.base import (
    Detections,
    Detector,
    check_class_count,
    check_images,
    pad_to_stride,
    register_detector,
)
from unirep.errors import ConfigError, WeightsError
from unirep.runtime_env import scoped_environ

DEFAULT_CONFIG: dict[str, Any] = {"model_yaml": "yolov8n.yaml"}
STRIDE = 32
PAD_VALUE = 114 / 255  # ultralytics' letterbox grey
NECK_LAYERS = (15, 18, 21)  # the C2f outputs at strides 8, 16, 32 that feed the Detect head
BACKBONE_LAYER = 9  # SPPF, the end of the backbone


@functools.cache
def _config_dir() -> Path:
    """One temporary ultralytics config dir per process, with the font training asks for; removed at exit."""
    import matplotlib

    root = Path(tempfile.mkdtemp(prefix="unirep-ultralytics-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "Ultralytics").mkdir()
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    shutil.copyfile(font, root / "Ultralytics" / "Arial.ttf")
    return root


def offline_variables() -> dict[str, str]:
    return {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(_config_dir()),
            "ULTRALYTICS_SAFE_LOAD": "1"}


@contextlib.contextmanager
def ultralytics_environment() -> Iterator[None]:
    """Within: ultralytics' offline switches and safe loading (module docstring); afterwards the environment is
    back as it was. The first import of ultralytics must happen inside (it reads these at import)."""
    with scoped_environ(offline_variables()):
        try:
            import ultralytics  # noqa: F401  (imported here so its import-time settings read the switches)
        except ImportError:
            raise ConfigError("YOLO detectors need the optional extra [yolo] (ultralytics, AGPL-3.0): run "
                              "`pip install 'unirep[yolo]'`") from None
        yield


def build_detection_model(model_yaml: str | Mapping[str, Any], num_classes: int, names: tuple[str, ...]) -> nn.Module:
    """ultralytics' `DetectionModel(yaml, nc=...)` with random weights (no file is read but the model's yaml)."""
    with ultralytics_environment():
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel(dict(model_yaml) if isinstance(model_yaml, Mapping) else model_yaml, nc=num_classes,
                               verbose=False)
    model.names = dict(enumerate(names))
    return model


@register_detector("yolov8")
class YOLODetector(Detector):
    """An ultralytics YOLOv8 `DetectionModel` (anchor-free, decoupled head, DFL boxes) as a unirep `Detector`."""

    kind = "yolov8"
    default_conf = 0.25
    default_iou = 0.7  # ultralytics' predict/val default

    @classmethod
    def build(cls, classes: tuple[str, ...], config: Mapping[str, Any]) -> YOLODetector:
        config = {**DEFAULT_CONFIG, **dict(config)}
        return cls(build_detection_model(config["model_yaml"], len(classes), tuple(classes)), classes, config)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float RGB in [0, 1] (ultralytics' input), padded with its letterbox grey to a multiple of 32."""
        check_images(images, "YOLO input")
        if images.is_floating_point():
            return images
        return pad_to_stride(images.float() / 255.0, STRIDE, value=PAD_VALUE)

    def _predictions(self, images: torch.Tensor) -> torch.Tensor:
        """Detect's inference output (B, 4 + C, A): xywh pixels and per-class sigmoid scores."""
        output = self.module(self.preprocess(images))
        return output[0] if isinstance(output, (tuple, list)) else output

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.module.training:
            raise ConfigError("YOLODetector.raw needs eval mode (the Detect head decodes boxes only there): call "
                              "detector.eval() first")
        predictions = self._predictions(images).transpose(1, 2)
        xy, wh = predictions[..., :2], predictions[..., 2:4]
        return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1), predictions[..., 4:]

    @torch.no_grad()
    def detect(self, images: torch.Tensor, conf: float | None = None, iou: float | None = None,
               max_det: int = 100) -> list[Detections]:
        """ultralytics' own `non_max_suppression` (class-aware, one label per box), with the kept cells' indices
        to read their class vectors. `max_time_img` is lifted: its time limit would drop boxes on a busy CPU."""
        from ultralytics.utils.nms import non_max_suppression

        predictions = self._predictions(images)
        conf = self.default_conf if conf is None else conf
        iou = self.default_iou if iou is None else iou
        # NMS writes xyxy into a transposed view of its input: it gets its own copy.
        kept, indices = non_max_suppression(predictions.clone(), conf, iou, max_det=max_det, nc=self.num_classes,
                                            max_time_img=1e6, return_idxs=True)
        class_scores = predictions[:, 4:4 + self.num_classes].transpose(1, 2)
        return [Detections(k[:, :4].float(), k[:, 4].float(), k[:, 5].long(), class_scores[b, i.long()].float())
                for b, (k, i) in enumerate(zip(kept, indices))]

    def cam_target_layers(self) -> list[nn.Module]:
        """The neck's C2f outputs at strides 8, 16, 32 (layers 15, 18, 21): what the Detect head reads."""
        return [self.module.model[i] for i in NECK_LAYERS]

    def embed(self, images: torch.Tensor, layers: tuple[int, ...] = (BACKBONE_LAYER,)) -> torch.Tensor:
        """Pooled features of `layers` concatenated (ultralytics' `model(x, embed=[...])`), (B, D)."""
        return torch.stack(self.module(self.preprocess(images), embed=list(layers)))


TRAIN_DEFAULTS: dict[str, Any] = {
    # plots=False: no figures (and no font look-up for them); workers=0: the 2-core target, images in RAM.
    "plots": False, "workers": 0, "cache": "ram", "device": "cpu", "amp": False, "pretrained": False,
    "deterministic": True, "exist_ok": True, "verbose": False, "val": True, "patience": 1000,
}


def train_yolo(detector: YOLODetector, data_yaml: str | Path, out: str | Path, *, epochs: int, imgsz: int,
               batch: int, seed: int, **overrides: Any) -> dict[str, Any]:
    """Train `detector.module` in place with ultralytics' own `DetectionTrainer` on `data_yaml` (our module is the
    trainer's model: random or user-initialised weights, exactly what `detector` holds); the best epoch by
    ultralytics' fitness (mAP@.5:.95) on the yaml's val split is loaded back. A killed run resumes from
    `out/ultralytics/weights/last.pt` (ultralytics' resume; our own run's file, read through the safe loader).

    Returns ultralytics' metrics of the best weights on val (its `results_dict`)."""
    out = Path(out).resolve()
    last = out / "ultralytics" / "weights" / "last.pt"
    settings = {**TRAIN_DEFAULTS, "model": _yaml_of(detector), "task": "detect", "mode": "train",
                "data": str(data_yaml), "epochs": epochs, "imgsz": imgsz, "batch": batch, "seed": seed,
                "project": str(out), "name": "ultralytics",
                # One optimizer step per batch (ultralytics accumulates to a nominal 64 otherwise: 9 steps per
                # epoch on 600 images), mosaic off for the last quarter, one warm-up epoch: short CPU runs.
                "nbs": batch, "close_mosaic": max(1, epochs // 4), "warmup_epochs": min(3, max(1, epochs // 10)),
                **overrides}
    with ultralytics_environment():
        from ultralytics.models.yolo.detect import DetectionTrainer
        from ultralytics.nn.tasks import load_checkpoint

        state = _run_state(last, epochs)
        metrics: dict = {}
        if state != "finished":
            trainer = DetectionTrainer(overrides={**settings, "resume": str(last)} if state == "stopped" else settings)
            if state == "none":
                trainer.model = detector.module
            trainer.train()
            metrics = dict(getattr(trainer, "metrics", None) or {})
        best = last.with_name("best.pt") if last.with_name("best.pt").is_file() else last
        trained, _ = load_checkpoint(str(best))
    detector.module.load_state_dict(trained.float().state_dict(), strict=True)
    detector.module.float().eval()
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _run_state(last: Path, epochs: int) -> str:
    """"none" (no run yet), "stopped" (killed before `epochs`: resume) or "finished" (ultralytics strips the
    optimizer from last.pt when a run ends)."""
    if not last.is_file():
        return "none"
    from ultralytics.nn.tasks import torch_safe_load

    checkpoint, _ = torch_safe_load(str(last), safe_only=True)
    if checkpoint.get("optimizer") is not None and int(checkpoint.get("epoch", -1)) + 1 < epochs:
        return "stopped"
    return "finished"


def _yaml_of(detector: YOLODetector) -> str:
    """The model name ultralytics' trainer / `YOLO` wrapper are given. The module they run is always ours (set on
    the trainer, swapped into the wrapper); the name only says the task, so a yaml dict read from a user's .pt
    gives the file it was built from."""
    model_yaml = detector.config["model_yaml"]
    return model_yaml if isinstance(model_yaml, str) else str(model_yaml.get("yaml_file") or "yolov8n.yaml")


def ultralytics_val(detector: YOLODetector, data_yaml: str | Path, split: str, imgsz: int, *, batch: int = 16,
                    conf: float = 0.001, iou: float = 0.7, max_det: int = 300) -> dict[str, float]:
    """ultralytics' own `val()` of `detector`'s weights on a split of `data_yaml` (its NMS, matching, and
    101-point interpolated AP): the cross-check of unirep's mAP."""
    with ultralytics_environment():
        from ultralytics import YOLO

        yolo = YOLO(_yaml_of(detector), task="detect")
        yolo.model = detector.module
        metrics = yolo.val(data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, conf=conf, iou=iou,
                           max_det=max_det, plots=False, device="cpu", workers=0, verbose=False, save_json=False,
                           project=tempfile.mkdtemp(prefix="unirep-yolo-val-"), name="val")
    detector.module.float().eval()
    return {"map": float(metrics.box.map), "map_50": float(metrics.box.map50)}


def state_dict_from_ultralytics_pt(path: str | Path, num_classes: int | None) -> tuple[dict, dict, tuple[str, ...]]:
    """(state dict, model yaml, class names) of an ultralytics `.pt`, read with ultralytics' safe loader only.

    Raises WeightsError (one line) for a missing/unloadable file or one for another number of classes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"ultralytics checkpoint {str(path)!r} not found: give the path to an existing .pt file")
    with ultralytics_environment():
        from ultralytics.nn.tasks import torch_safe_load

        try:
            checkpoint, _ = torch_safe_load(str(path), safe_only=True)
        except (TypeError, RuntimeError, ValueError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(f"{path}: not loadable by ultralytics' safe loader ({first}); unirep never "
                               "unpickles a full .pt otherwise") from None
    model = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(model, nn.Module) or not hasattr(model, "yaml"):
        raise WeightsError(f"{path}: holds no ultralytics model ('ema'/'model' entry): not a YOLO checkpoint")
    names = getattr(model, "names", None) or {}
    classes = tuple(names[i] for i in sorted(names)) if isinstance(names, Mapping) else tuple(names)
    found = int(model.yaml.get("nc", len(classes)))
    check_class_count(found, num_classes, where=str(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}, dict(model.yaml), \
        classes or tuple(str(i) for i in range(found))


def detector_from_weights(path: str | Path, classes: tuple[str, ...], config: Mapping[str, Any]) -> YOLODetector:
    """A YOLO for `classes` initialised from a user's file: an ultralytics `.pt` (safe loader) or a safetensors
    state dict of `DetectionModel(yaml, nc=len(classes))`; another class count is refused in one line."""
    from unirep.backbones.weights import load_strict, read_state_dict

    path = Path(path)
    if path.suffix == ".pt":
        state, model_yaml, _ = state_dict_from_ultralytics_pt(path, len(classes))
        config = {**dict(config), "model_yaml": model_yaml}
    else:
        state = read_state_dict(path)
        head = [k for k in state if k.endswith(".cv3.0.2.weight")]  # the stride-8 class branch: (nc, c, 1, 1)
        if head:
            check_class_count(int(state[head[0]].shape[0]), len(classes), where=str(path))
    detector = YOLODetector.build(classes, config)
    load_strict(detector.module, state, where=str(path))
    return detector


__all__ = ["DEFAULT_CONFIG", "NECK_LAYERS", "YOLODetector", "build_detection_model", "detector_from_weights",
           "offline_variables", "state_dict_from_ultralytics_pt", "train_yolo", "ultralytics_environment",
           "ultralytics_val"]
