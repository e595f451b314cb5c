"""What source training (unirep.sources) and fine-tuning (unirep.finetune) share, so neither borrows from the other:

- unirep.training.data: splits resized and cropped once into uint8 tensors (`CachedSplit`, `cache_split`) and the
  rule that splits the global batch over the devices (`device_batch_size`);
- unirep.training.optim: the optimiser settings both record (`OptimSettings`), the one optimiser table
  (`OPTIMIZERS`, with its weight-decay rule) and the warm-up + cosine schedule;
- unirep.training.determinism: `preserve_deterministic_mode`, which hands the caller torch's deterministic-algorithms
  setting back after a Lightning fit.

Nothing here imports Lightning at module level except where a Trainer is read, so importing it stays cheap.
"""
