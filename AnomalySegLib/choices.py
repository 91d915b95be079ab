"""Named choices the engine offers on the command line and in the Slicer module (torch-free).

Threshold presets of a calibrated model, the default healthy false-positive rates they come from,
and the compute precisions. Defined here once; the engine modules that act on them import them.
"""

from __future__ import annotations

#: The Dice-optimal threshold on the validation set.
VALIDATION_PRESET = "val"
#: Voxel false-positive rates on healthy cases that ``calibrate`` turns into presets by default.
DEFAULT_FPR_RATES = (0.01, 0.05, 0.10)


def fpr_preset(rate: float) -> str:
    """The threshold preset name of a voxel false-positive rate: 0.01 → ``"fpr1"``, 0.1 → ``"fpr10"``."""
    return f"fpr{rate * 100:g}"


#: Threshold presets ``segment --threshold`` accepts (when the model was calibrated for them).
THRESHOLD_PRESETS = (VALIDATION_PRESET, *(fpr_preset(rate) for rate in DEFAULT_FPR_RATES))
#: ``auto``: bf16 (or fp16) autocast on a GPU, bf16 on a CPU with native bf16 instructions, else fp32
#: (:func:`AnomalySegLib.device.autocast_dtype`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``evaluate --protocol``: ``default`` (the bundle's operating point) or ``paper`` (Table 1 as the authors'
#: code computes it, no clean-up).
PROTOCOLS = ("default", "paper")
#: ``prepare-dataset --splits``: seeded folds per dataset, or the authors' published split lists.
SPLIT_KINDS = ("seeded", "paper")
#: Brain mask of skull-on scans: the template's mask through the registration, or learned extraction.
BRAIN_MASK_METHODS = ("template", "learned")
#: Registration templates (``PreprocessingSpec.template``): the MNI ICBM152 2009c copy committed under
#: ``Resources/Templates`` (default), and SRI24, the paper's atlas, made on first use from the skull-stripped
#: T1 that ``AnomalySegLib.sample_data`` fetches (``sri24_t1_brain``).
TEMPLATES = ("icbm2009c", "sri24")
#: Seed of the paper's DRAEM-synthetic IXI test set (the authors' experiment seed).
DRAEM_TEST_SET_SEED = 3141
