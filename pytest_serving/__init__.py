"""pytest-serving: test model-serving systems in real containers."""

__version__ = "0.1.0"

PROJECT_LABEL = "io.pytest-serving.project"
