"""Synthetic anomalies for self-supervised Stage II training and for tests."""

from AnomalySegLib.anomalies.draem import DraemAnomalyGenerator, SyntheticAnomalies
from AnomalySegLib.anomalies.lesion import LesionAnomalyGenerator
from AnomalySegLib.anomalies.mixture import AnomalyGenerator, AnomalyMixture
from AnomalySegLib.anomalies.sphere import SphereAnomalyGenerator

__all__ = ["AnomalyGenerator", "AnomalyMixture", "DraemAnomalyGenerator", "LesionAnomalyGenerator",
           "SphereAnomalyGenerator", "SyntheticAnomalies"]
