"""Server-side metrics: Prometheus text pages, and per-request queue and compute time of a load phase."""

from .prometheus import Exposition, MetricSample, MetricsFormatError, parse_exposition
from .server import (
    KNOWN_SPECS,
    TORCHSERVE_METRICS,
    TRITON_METRICS,
    MetricsPage,
    PhaseServerMetrics,
    ServerMetricsSpec,
    ServerTimes,
    Unmeasured,
    combined,
    metrics_page,
    scraped_around,
    spec_for,
)

__all__ = [
    "KNOWN_SPECS",
    "TORCHSERVE_METRICS",
    "TRITON_METRICS",
    "Exposition",
    "MetricSample",
    "MetricsFormatError",
    "MetricsPage",
    "PhaseServerMetrics",
    "ServerMetricsSpec",
    "ServerTimes",
    "Unmeasured",
    "combined",
    "metrics_page",
    "parse_exposition",
    "scraped_around",
    "spec_for",
]
