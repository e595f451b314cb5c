"""Case-based decisions: a ProtoPNet-style prototype probe on a frozen backbone's spatial maps ("this looks like
that"), its position-aware variant for spectrograms, projection onto training patches, pruning of duplicates and a
faithfulness check by masking. Registered protocols: `prototype`, `prototype-band` (unirep.prototypes.protocol).

Modules: `maps` (spatial maps through the feature cache), `model` (the head: add-on, prototypes, similarity, last
layer), `train` (fit, projection, pruning, selection on val), `protocol`, `faithfulness`.
"""
