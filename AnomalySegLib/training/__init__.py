"""Training: the generic loop (checkpoints, EMA, DDP, AMP, logs) and the two stages.

Stage I is :mod:`.recon_training`; Stage II is :mod:`.seg_training` with its configuration
(:mod:`.seg_config`), batches (:mod:`.seg_batches`), loss (:mod:`.seg_objective`) and validation
(:mod:`.seg_validation`). Both stages build on :mod:`.scaffold` (folders, trainer, provenance),
:mod:`.loop`, :mod:`.slices`, :mod:`.augment`, :mod:`.case_splits`, :mod:`.checkpoint` and :mod:`.distributed`.
"""
