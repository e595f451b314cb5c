"""The networks source schemes train (re-exported from `unirep.backbones.source_networks`, where they live so
that a checkpoint can rebuild them as a backbone without importing the training code)."""

from unirep.backbones.source_networks import (
    FEATURE_NORMS,
    STEM_ADAPTERS,
    NetworkSpec,
    SourceNetwork,
    adapt_stem,
    check_architecture,
    compose_features,
    create_trunk,
    linf_normalise,
    load_trunk_weights,
    resolve_feature_norm,
    unirep_resnet18_half,
)

__all__ = ["FEATURE_NORMS", "STEM_ADAPTERS", "NetworkSpec", "SourceNetwork", "adapt_stem", "check_architecture",
           "compose_features", "create_trunk", "linf_normalise", "load_trunk_weights", "resolve_feature_norm",
           "unirep_resnet18_half"]
