"""Corrupt, unusual and malformed requests that every serving target must answer without failing."""

from .catalogue import Case, catalogue

__all__ = ["Case", "catalogue"]
