"""Source-task training: produce backbones with the schemes of Tamaazousti et al. (MuCaLe-Net, MulDiP-Net,
multi-task, FSFT) on Lightning, and write them as unirep checkpoints the evaluation spine loads by path.

    unirep train-source configs/sources/muldip.yaml optim.epochs=2
    create_backbone("runs/sources/muldip")  # MulDiP-Net features: L-inf-normalised networks, concatenated

Registries: SCHEMES (unirep.sources.schemes) and VARIATIONS, the label-set kinds (unirep.sources.label_sets).
`train_source` lives in unirep.sources.train (it imports Lightning, so it is not imported here).
"""

from unirep.sources.config import SourceRunConfig, load_source_config
from unirep.sources.label_sets import VARIATIONS, LabelSet
from unirep.sources.schemes import SCHEMES, Scheme, create_scheme

__all__ = ["SCHEMES", "VARIATIONS", "LabelSet", "Scheme", "SourceRunConfig", "create_scheme", "load_source_config"]
