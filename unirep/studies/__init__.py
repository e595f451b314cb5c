"""Studies: comparisons that combine several pipelines (fine-tuning, OoD detection, ...) into one table.

A study reads what the pipelines below it produce (backbones, fine-tuning, feature cache, OoD scores and records);
nothing below imports it.

- unirep.studies.finetune_ood: fine-tuning strategies (frozen + linear probe, full fine-tuning, LP-FT, WiSE-FT)
  and every post-hoc OoD score on each resulting network (`unirep ood-study`).
"""
