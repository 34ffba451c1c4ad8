"""The embedded default classifier: preprocessing, in-process reference and export."""
