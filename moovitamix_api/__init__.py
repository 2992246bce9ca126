"""A stand-in for the MooVitamix API: deterministic, day-evolving data and injectable faults.

``python -m moovitamix_api --port 8000 --records 1000 --seed 42`` serves it; ``Dataset`` generates
the same records in-process; ``StandInServer`` runs it on loopback for tests.
"""

from moovitamix_api.config import DataConfig, FaultConfig, StandInConfig
from moovitamix_api.data import Dataset

__all__ = ["DataConfig", "Dataset", "FaultConfig", "StandInConfig"]
