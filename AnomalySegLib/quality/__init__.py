"""Input quality: the domain check that refuses what is not a brain MRI and flags what the model was not
made for (:mod:`.domain`), its measures (:mod:`.measures`, :mod:`.catalogue`) and their reference ranges
from a model's training scans (:mod:`.reference`)."""
