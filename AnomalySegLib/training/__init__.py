"""Training: the generic loop (checkpoints, EMA, DDP, AMP, logs) and the Stage I task.

Stage II (``seg_training``) reuses :mod:`.loop`, :mod:`.slices`, :mod:`.augment`, :mod:`.checkpoint`
and :mod:`.distributed`.
"""
