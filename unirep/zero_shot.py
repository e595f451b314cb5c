"""Zero-shot classification with a CLIP backbone's text tower: class-name prompts, their cached text embeddings, the
zero-shot head, and the `zero-shot` protocol.

A class's text embedding is CLIP's prompt ensemble (Radford et al. 2021): every template filled with the class
name, each prompt embedded and L2-normalised, the mean normalised again. The zero-shot logits of an image are
`logit_scale * cos(image embedding, class embedding)`; the prediction is their argmax. Nothing is trained or
selected, so the protocol scores the sealed test split once and reports the val split's score next to it.

Templates are named sets (`TEMPLATE_SETS`; `clip-7`, the default, is the 7-template ensemble CLIP's authors chose
for ImageNet; `photo` is "a photo of a {}.") or a list of strings with one `{}` each. The text embeddings are cached
next to the feature cache (`<cache_dir>/text/`), keyed by the text tower's identity (architecture, weights hash,
context length) and the exact prompts, so a second run, or a second task with the same classes, embeds nothing.

Protocols: `zero-shot` (templates from the `zero_shot` config section when the run has one, else `clip-7`) and
`zero-shot-<set>` for each named set (`zero-shot-photo`), so a run can compare template sets side by side. Class names
are the task card's, in label order, unless the `zero_shot.class_names` mapping names other prompt names for a task.

Example:
    >>> head = zero_shot_head(backbone, ["cat", "dog"], "photo")
    >>> head.logits(image_embeddings).argmax(1)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from unirep.errors import ConfigError
from unirep.fileio import atomic_save_npz, sha256_json
from unirep.metrics import Metric
from unirep.protocols import PROTOCOLS, Protocol, ProtocolOutcome, TaskFeatures

TEXT_CACHE_FORMAT = 1
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    # The 7 templates CLIP's authors selected for ImageNet (their "Prompt Engineering for ImageNet" notebook).
    "clip-7": ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
               "a {} in a video game.", "art of the {}.", "a photo of the small {}."),
    "photo": ("a photo of a {}.",),
}
DEFAULT_TEMPLATE_SET = "clip-7"
# Layers whose features are (or begin with) the image embedding the text embeddings are compared with.
EMBEDDING_LAYERS = (None, "unit-embedding", "tokens")


@dataclass
class ZeroShotConfig:
    """The `zero_shot` section: `templates` is a set name or a list of templates (one `{}` each); `class_names`
    maps a task name to the names its prompts use, in label order (default: the task card's classes)."""

    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE_SET])
    class_names: dict[str, list[str]] = field(default_factory=dict)


def resolve_templates(spec: str | Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(name, templates) of a set name, a one-element list holding a set name, or a list of templates."""
    items = [spec] if isinstance(spec, str) else [str(t) for t in spec]
    if len(items) == 1 and items[0] in TEMPLATE_SETS:
        return items[0], TEMPLATE_SETS[items[0]]
    bad = [t for t in items if t.count("{}") != 1]
    if not items or bad:
        raise ConfigError(f"zero-shot templates {items!r}: give a set name ({', '.join(TEMPLATE_SETS)}) or templates "
                          f"with exactly one '{{}}' each (bad: {bad or 'none given'})")
    return "custom", tuple(items)


def class_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Per class, every template filled with the class name."""
    return [[template.format(name) for template in templates] for name in class_names]


class TextEmbeddingCache:
    """Prompt embeddings of one text tower, stored as `<root>/text/<key[:2]>/<key>.npz` (atomic writes)."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root).expanduser() / "text"

    @staticmethod
    def key(text_identity: dict, prompts: Sequence[str]) -> str:
        return sha256_json({"format": TEXT_CACHE_FORMAT, "text_tower": text_identity, "prompts": list(prompts)})

    def get_or_embed(self, text_tower, prompts: Sequence[str]) -> tuple[np.ndarray, str, bool]:
        """(embeddings (P, E) float32 unnormalised, cache key, whether they came from the cache)."""
        key = self.key(text_tower.identity(), prompts)
        path = None if self.root is None else self.root / key[:2] / f"{key}.npz"
        if path is not None and path.exists():
            try:
                with np.load(path) as data:
                    found = data["embeddings"]
                if len(found) == len(prompts) and np.isfinite(found).all():
                    return found, key, True
            except Exception as exc:  # noqa: BLE001 - a damaged entry is named and replaced, never trusted
                print(f"unirep: text-embedding cache entry {path} is unreadable ({type(exc).__name__}); embedding "
                      "again", file=sys.stderr)
        embeddings = text_tower.encode(prompts)
        if path is not None:
            atomic_save_npz(path, embeddings=embeddings, key=np.array(key))
        return embeddings, key, False


@dataclass(frozen=True)
class ZeroShotHead:
    """Unit class embeddings (K, E) and CLIP's logit scale; `logits` are logit_scale * cosine similarities."""

    class_names: tuple[str, ...]
    template_set: str
    templates: tuple[str, ...]
    embeddings: np.ndarray
    logit_scale: float
    cache_key: str
    cached: bool = False

    def cosine(self, features: np.ndarray) -> np.ndarray:
        """(N, K) cosine similarities of image embeddings (or `tokens` features, whose first E columns they are)."""
        return unit_rows(image_embeddings(features, self.embeddings.shape[1])) @ self.embeddings.T

    def logits(self, features: np.ndarray) -> np.ndarray:
        return self.logit_scale * self.cosine(features)

    def linear_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight (K, E), bias (K,)) of the linear layer that gives these logits on unit image embeddings (a `clip:`
        backbone's `layer=unit-embedding`): WiSE-FT's zero-shot head, the alpha = 0 end of its interpolation."""
        return (self.logit_scale * self.embeddings).astype(np.float32), np.zeros(len(self.embeddings), np.float32)

    def record(self) -> dict:
        """What a record says about the head: every prompt setting and the logit scale."""
        return {"template_set": self.template_set, "templates": list(self.templates), "class_names":
                list(self.class_names), "logit_scale": self.logit_scale, "text_embeddings_key": self.cache_key,
                "ensemble": "mean of L2-normalised prompt embeddings, normalised again"}


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def image_embeddings(features: np.ndarray, embed_dim: int) -> np.ndarray:
    """The image embeddings in `features`: all of it, or the first E columns of `tokens` features ((1 + N) * E)."""
    features = np.asarray(features)
    if features.shape[1] != embed_dim and features.shape[1] % embed_dim:
        raise ConfigError(f"features of dimension {features.shape[1]} are not CLIP image embeddings of dimension "
                          f"{embed_dim} (nor `tokens` features): use the backbone's default layer or layer=tokens")
    return features[:, :embed_dim]


def zero_shot_head(backbone, class_names: Sequence[str], templates: str | Sequence[str] = DEFAULT_TEMPLATE_SET,
                   cache_dir: str | Path | None = None) -> ZeroShotHead:
    """The zero-shot head of a CLIP backbone for these classes (text embeddings cached under `cache_dir`)."""
    text_tower = getattr(backbone, "text_tower", None)
    if text_tower is None:
        raise ConfigError(f"backbone {backbone.name!r} has no text tower: zero-shot classification and MCM need a "
                          "CLIP backbone (clip:<open_clip model> with weights=FILE)")
    template_set, chosen = resolve_templates(templates)
    names = [str(n) for n in class_names]
    prompts = class_prompts(names, chosen)
    flat = [p for per_class in prompts for p in per_class]
    raw, key, cached = TextEmbeddingCache(cache_dir).get_or_embed(text_tower, flat)
    per_prompt = unit_rows(raw).reshape(len(names), len(chosen), -1)
    ensemble = unit_rows(per_prompt.mean(axis=1))
    return ZeroShotHead(tuple(names), template_set, chosen, ensemble, text_tower.logit_scale, key, cached)


class ZeroShotClassifier:
    """The head as a selected classifier for `SealedSplit.evaluate` (nothing to select)."""

    is_selected = True

    def __init__(self, head: ZeroShotHead):
        self.head = head

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        return self.head.logits(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_scores(X).argmax(axis=1)


class ZeroShotProtocol(Protocol):
    """Classifies the task from its class-name prompts with the backbone's text tower; one record, seed 0 only
    (nothing is random). Needs the backbone and the class names next to the features (`TaskFeatures`)."""

    def __init__(self, cfg: DictConfig, template_set: str | None = None):
        super().__init__(cfg)
        section = OmegaConf.select(cfg, "zero_shot", default=None)
        settings = OmegaConf.merge(OmegaConf.structured(ZeroShotConfig), section or {})
        self.templates = [template_set] if template_set else list(settings.templates)
        self.class_names = {str(k): [str(n) for n in v] for k, v in settings.class_names.items()}
        resolve_templates(self.templates)  # refused when the protocol is made, before any work

    def seeds(self) -> list[int]:
        return [0]

    def run(self, data: TaskFeatures, metric: Metric, seed: int) -> ProtocolOutcome:
        backbone = getattr(data, "backbone", None)
        if backbone is None or getattr(backbone, "text_tower", None) is None:
            raise ConfigError(f"the zero-shot protocol needs a CLIP backbone (clip:<open_clip model>), got "
                              f"{getattr(backbone, 'name', 'none')!r}")
        if backbone.layer not in EMBEDDING_LAYERS:
            raise ConfigError(f"zero-shot on {backbone.name!r}: layer {backbone.layer!r} is not in the text "
                              "embeddings' space; use the default layer (or layer=tokens)")
        names = self._class_names(data)
        head = zero_shot_head(backbone, names, self.templates, OmegaConf.select(self.cfg, "cache_dir", default=None))
        classifier = ZeroShotClassifier(head)
        val_predictions = classifier.predict(data.val.X)
        val_score = metric(data.val.y, classifier.decision_scores(data.val.X) if metric.needs_scores else
                           val_predictions)
        test = data.test.evaluate(classifier, metric)
        return ProtocolOutcome(
            metric=metric.value,
            score=float(test.score),
            val_score=float(val_score),
            hyperparameters=head.record(),
            test_labels=test.labels.tolist(),
            test_predictions=test.predictions.tolist(),
            extra={"text_tower": backbone.text_tower.identity(), "text_embeddings_cached": head.cached,
                   "trained": "nothing (zero-shot); val_score is the val split's score, nothing was selected on it"},
        )

    def _class_names(self, data: TaskFeatures) -> list[str]:
        card_names = list(getattr(data, "class_names", ()) or ())
        task = getattr(data, "task", None)
        names = self.class_names.get(task, card_names) if task else card_names
        if not names:
            raise ConfigError("the zero-shot protocol needs the task's class names: the task card lists none; give "
                              "them as zero_shot.class_names.<task>=[...]")
        if card_names and len(names) != len(card_names):
            raise ConfigError(f"zero_shot.class_names for task {task!r} has {len(names)} names, the task has "
                              f"{len(card_names)} classes: give one prompt name per class, in label order")
        return names


PROTOCOLS.add("zero-shot", ZeroShotProtocol)
for _set in TEMPLATE_SETS:
    PROTOCOLS.add(f"zero-shot-{_set}", functools.partial(ZeroShotProtocol, template_set=_set))

