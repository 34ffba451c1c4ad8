"""Server-side metrics: Prometheus text pages, and per-request queue and compute time of a load phase."""

from .prometheus import Exposition, MetricSample, MetricsFormatError, parse_exposition
from .server import (
    MetricsPage,
    PhaseServerMetrics,
    ServerMetricsSpec,
    ServerTimes,
    Unmeasured,
    combined,
    metrics_page,
    scraped_around,
)

__all__ = [
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
]
