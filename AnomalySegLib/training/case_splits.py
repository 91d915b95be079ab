"""Which cases of a training run are held out for validation (deterministic: by case id)."""

from __future__ import annotations

from collections.abc import Sequence

from AnomalySegLib.preprocessing.case_folder import ModelSpaceCase


def split_cases(
    cases: Sequence[ModelSpaceCase], validation_cases: int
) -> tuple[list[ModelSpaceCase], list[ModelSpaceCase]]:
    """Held-out validation cases: the last ``validation_cases`` by case id (none if that leaves < 1)."""
    ordered = sorted(cases, key=lambda case: case.case_id)
    count = validation_cases if len(ordered) > validation_cases else 0
    return ordered[: len(ordered) - count], ordered[len(ordered) - count :]


def split_labelled(
    cases: Sequence[ModelSpaceCase], fraction: float
) -> tuple[list[ModelSpaceCase], list[ModelSpaceCase]]:
    """Labelled cases for training and validation: the last ``max(1, round(fraction·n))`` by id held out
    (none when there is a single case)."""
    ordered = sorted(cases, key=lambda case: case.case_id)
    count = max(1, round(fraction * len(ordered))) if len(ordered) > 1 and fraction > 0 else 0
    return ordered[: len(ordered) - count], ordered[len(ordered) - count :]
