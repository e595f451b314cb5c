"""Zero-shot OoD scores of CLIP backbones: MCM and GL-MCM, on the image-text cosine similarities.

Both read the classifier head as the class text embeddings: the head must be CLIP's zero-shot head of the ID
classes (`ZeroShotLinearHead`, built from `unirep.zero_shot.zero_shot_head`); its rows are normalised here, so
CLIP's logit scale does not enter. Any other head (a linear probe's) makes them not applicable: the run skips them
with one line, as it skips ASH on features with negative values. Temperatures are fixed settings, recorded in each
record's hyperparameters (T = 1 is both papers' choice: cosine similarities lie in [-1, 1]).

- `mcm` (Ming et al., NeurIPS 2022): max_c softmax_c(cos(x, t_c) / T), x the image embedding.
- `gl-mcm` (Miyai et al., 2023): MCM of the image embedding + lambda * max over patches of the MCM of each local
  patch embedding (GL-MCM's local features, `layer=tokens` of a `clip:` backbone: the image embedding followed by
  the N patch embeddings). Other features are refused for it with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import softmax

from unirep.ood.scores import FitData, LinearHead, OodScore, ScoreNotApplicable, register_score
from unirep.zero_shot import DEFAULT_TEMPLATE_SET, ZeroShotHead, image_embeddings, unit_rows, zero_shot_head


@dataclass(frozen=True)
class ZeroShotLinearHead(LinearHead):
    """CLIP's zero-shot head as a `LinearHead`: weight = logit_scale * unit class embeddings, no bias. Its logits on
    unit-normalised image embeddings are CLIP's zero-shot logits (`ZeroShotHead.logits`); MCM and GL-MCM read its
    rows, and refuse any other head."""

    template_set: str = ""

    @classmethod
    def from_zero_shot(cls, head: ZeroShotHead) -> ZeroShotLinearHead:
        weight = np.asarray(head.embeddings, np.float64) * head.logit_scale
        return cls(weight, np.zeros(len(weight)), head.template_set)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """CLIP's zero-shot logits, logit_scale * cos: the image embeddings (the first E columns of `tokens`
        features) are normalised first, so logit scores (MSP, energy, ...) on this head are CLIP's baselines."""
        return unit_rows(image_embeddings(features, self.weight.shape[1])) @ self.weight.T + self.bias


def zero_shot_linear_head(head: ZeroShotHead) -> ZeroShotLinearHead:
    return ZeroShotLinearHead.from_zero_shot(head)


def zero_shot_ood_head(backbone, bench, templates: str | Sequence[str] = DEFAULT_TEMPLATE_SET,
                       cache_dir: str | Path | None = None) -> ZeroShotLinearHead:
    """The zero-shot head of a benchmark's ID classes, in its ID label order (`bench.id_classes`): the classifier a
    `unirep ood` run gives MCM and GL-MCM for a `clip:` backbone (text embeddings cached under `cache_dir`)."""
    return ZeroShotLinearHead.from_zero_shot(zero_shot_head(backbone, bench.id_classes, templates, cache_dir))


class _ConceptMatching(OodScore):
    """Cosine similarities of L2-normalised image (and patch) embeddings to the unit class text embeddings."""

    defaults = {"temperature": 1.0}

    def setup(self, train: FitData) -> _ConceptMatching:
        if not isinstance(train.head, ZeroShotLinearHead):
            raise ScoreNotApplicable(f"{self.name} compares images with CLIP's class text embeddings: it needs the "
                                     "zero-shot head of a clip: backbone, not a linear probe's head")
        self.text_ = unit_rows(train.head.weight)  # (K, E)
        self.split_tokens(train.features[:1])  # refuses features that are not CLIP embeddings, before scoring
        return self

    def split_tokens(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image embeddings (B, E), patch embeddings (B, N, E)); N = 0 for plain image embeddings."""
        features = np.asarray(features, np.float64)
        dim = self.text_.shape[1]
        if features.shape[1] % dim:
            raise ScoreNotApplicable(f"{self.name} needs CLIP image embeddings of the head's dimension {dim} "
                                     f"(features have {features.shape[1]}): use a clip: backbone and its zero-shot "
                                     "head")
        tokens = features.reshape(len(features), -1, dim)
        return tokens[:, 0], tokens[:, 1:]

    def concept_matching(self, embeddings: np.ndarray) -> np.ndarray:
        """max over classes of softmax(cos / T), over the last axis of any (..., E) embeddings."""
        return softmax(unit_rows(embeddings) @ self.text_.T / self.params["temperature"], axis=-1).max(axis=-1)


@register_score("mcm", paper="Ming et al., NeurIPS 2022 (MCM): max over ID classes of softmax(cos(image embedding, "
                "class text embedding) / T), T = 1, with CLIP's zero-shot head")
class MaximumConceptMatching(_ConceptMatching):
    def score(self, features, logits):
        image, _ = self.split_tokens(features)
        return self.concept_matching(image)


@register_score("gl-mcm", paper="Miyai et al., 2023 (GL-MCM): MCM of the image embedding + lambda * max over patches "
                "of the MCM of the local patch embeddings (value path of the last block, MaskCLIP), T = 1, lambda = 1; "
                "needs layer=tokens")
class GlobalLocalConceptMatching(_ConceptMatching):
    defaults = {"temperature": 1.0, "local_weight": 1.0}

    def setup(self, train: FitData) -> GlobalLocalConceptMatching:
        super().setup(train)
        if train.features.shape[1] == self.text_.shape[1]:
            raise ScoreNotApplicable("GL-MCM reads local patch embeddings; these features are image embeddings only: "
                                     "use the clip: backbone with layer=tokens")
        return self

    def score(self, features, logits):
        image, patches = self.split_tokens(features)
        local = self.concept_matching(patches).max(axis=1)
        return self.concept_matching(image) + self.params["local_weight"] * local


__all__ = ["GlobalLocalConceptMatching", "MaximumConceptMatching", "ZeroShotLinearHead", "zero_shot_linear_head",
           "zero_shot_ood_head"]
