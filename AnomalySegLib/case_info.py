"""What the engine knows about one segmented case besides its images: provenance, checks, timings.

Torch-free, so the Slicer module and the results table can use it without the engine's heavy parts.
The stage names of :class:`StageTimings` are the stages ``segment`` reports progress for
(:data:`AnomalySegLib.progress.SEGMENT_STAGES` is built from :data:`SEGMENT_STAGE_NAMES`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

@dataclass
class StageTimings:
    """Wall time of each stage of one case, in seconds (0 for a stage that did not run).

    The fields, in order of work: reading the file, preprocessing to model space, Stage I
    reconstruction, the Stage II SegUnet, the anomaly score, the way back to the native grid, writing.
    """

    load: float = 0.0
    preprocess: float = 0.0
    reconstruct: float = 0.0
    segment: float = 0.0
    score: float = 0.0
    restore: float = 0.0
    write: float = 0.0

    def as_columns(self) -> dict[str, float]:
        """``{"seconds_load": ..., ...}``: the results-table columns."""
        return {f"seconds_{name}": getattr(self, name) for name in SEGMENT_STAGE_NAMES}


#: The stages of one case, in order of work (the fields of :class:`StageTimings`).
SEGMENT_STAGE_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StageTimings))


@dataclass
class CaseInfo:
    """Provenance and checks of one case (:attr:`AnomalySegLib.pipeline.SegmentationResult.info`).

    Attributes:
        engine_version: the AnomalySeg version that made the result.
        model: the model's name; ``model_sha256`` fingerprints its weights (see
            :meth:`AnomalySegLib.bundle.ModelBundle.fingerprint`); ``model_path`` its folder.
        device: the torch device string (``"cpu"``, ``"cuda:0"``); ``device_name`` in words.
        precision: the precision actually used by the networks: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        seed: the diffusion noise seed.
        preprocessing: what preprocessing reports (mask source, registration, intensity range).
        timings: seconds per stage.
        qc_warnings: human-readable warnings of the domain check; empty when none.
        domain: the domain-check measures by name (e.g. ``brain_volume_ml``).
        scored_brain_fraction: fraction (0–1) of the case's brain inside the scored model grid
            (``None`` when not measured).
        operating_point: the rule that turned the score map into the mask (threshold, source, ...).
    """

    engine_version: str
    model: str
    model_sha256: str | None
    model_path: str | None
    device: str
    device_name: str
    precision: str
    seed: int
    preprocessing: dict[str, Any]
    timings: StageTimings = field(default_factory=StageTimings)
    qc_warnings: list[str] = field(default_factory=list)
    domain: dict[str, float] = field(default_factory=dict)
    scored_brain_fraction: float | None = None
    operating_point: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (timings as ``timings_s``)."""
        document = dataclasses.asdict(self)
        document["timings_s"] = document.pop("timings")
        return document


#: The settings a new threshold changes: a case differing only in these is re-thresholded from its saved map.
THRESHOLD_SETTINGS = ("threshold", "threshold_source")


@dataclass(frozen=True)
class CaseSpec:
    """What a case's result depends on besides its input: recorded with the case, compared on a re-run.

    Device and precision are not part of it: they change the map by rounding only.

    Attributes:
        model: the model's name; ``model_sha256`` its weights' fingerprint.
        threshold: the threshold applied; ``threshold_source`` a preset name or ``"user"``.
        seed: the diffusion noise seed.
        mask: the brain mask file given (``None``: the template's or the input's own).
        save_intermediate: whether the model-space volumes were written (a case made with them also
            serves a run that does not ask for them).
    """

    model: str
    model_sha256: str | None
    threshold: float
    threshold_source: str
    seed: int
    mask: str | None
    save_intermediate: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differences(self, recorded: Any) -> list[str]:
        """The names of the settings in which ``recorded`` (a :meth:`to_dict` from a result file) differs.

        A record that is not a dict of these settings (made by an older engine) differs in all of them.
        """
        if not isinstance(recorded, dict):
            return [f.name for f in dataclasses.fields(self)]
        differing = [name for name, value in self.to_dict().items() if recorded.get(name) != value]
        if "save_intermediate" in differing and not self.save_intermediate:
            differing.remove("save_intermediate")  # intermediates written earlier and not asked for now: fine
        return differing
