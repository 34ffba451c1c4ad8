"""Corrupt, unusual and malformed requests that every serving target must answer without failing."""

from .catalogue import Case, catalogue
from .wire import FAMILIES

__all__ = ["FAMILIES", "Case", "catalogue"]
