"""Fine-tuning on Lightning: the network itself trains on a task, with learning rate and epochs chosen on val.

    unirep finetune mobilenetv2_100.packaged_in1k --task sklearn-digits --mode lp-ft --out runs/ft
    unirep eval mobilenetv2_100.packaged_in1k --tasks offline --protocols linear,knn,finetune

Modes (registry MODES, unirep.finetune.modes): `full` (every parameter trains), `last-k` (the last k stages of
the network, as timm's feature_info defines them, plus the head), `lp-ft` (a head-only phase, then everything at
a lower learning rate; Kumar et al. 2022). Selection and refit: unirep.finetune.select. The protocol `finetune`
(and `finetune-full`, `finetune-lp-ft`, `finetune-last-<k>`) writes the same records as the probes, plus the
training curve in `extra["curve"]`.

This package imports Lightning only where training happens, so registering the protocol stays cheap.
"""
