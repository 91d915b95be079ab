"""Synthetic anomalies for self-supervised Stage II training and for tests."""

from AnomalySegLib.anomalies.draem import DraemAnomalyGenerator, SyntheticAnomalies
from AnomalySegLib.anomalies.sphere import SphereAnomalyGenerator

__all__ = ["DraemAnomalyGenerator", "SphereAnomalyGenerator", "SyntheticAnomalies"]
