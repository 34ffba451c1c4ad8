"""A plain locustfile, written the way Locust's documentation writes one: the capacity benchmark's yardstick.

Nothing of pytest-serving runs here and nothing is added per request. One
greenlet reads Locust's own request count when the measured window opens and
when it closes, prints the figures as one ``WINDOW {json}`` line and ends the run.

    python -m locust -f benchmarks/plain_locustfile.py --headless -u 64 -r 64 \\
        --host http://127.0.0.1:8080/ PlainFastHttpUser
"""

from __future__ import annotations

import json
import time

import gevent
from locust import FastHttpUser, HttpUser, events, task
from locust.env import Environment


class PlainHttpUser(HttpUser):
    @task
    def get(self) -> None:
        self.client.get("/")


class PlainFastHttpUser(FastHttpUser):
    @task
    def get(self) -> None:
        self.client.get("/")


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--window-warmup", type=float, default=2.0, help="seconds before the measured window")
    parser.add_argument("--window-duration", type=float, default=12.0, help="measured seconds")


@events.test_start.add_listener
def _start(environment: Environment, **_kwargs) -> None:
    gevent.spawn(measure_window, environment)


def measure_window(environment: Environment) -> None:
    options = environment.parsed_options
    gevent.sleep(options.window_warmup)
    opened, requests_before, failures_before = time.perf_counter(), *totals(environment)
    gevent.sleep(options.window_duration)
    closed, requests_after, failures_after = time.perf_counter(), *totals(environment)
    window = {
        "seconds": closed - opened,
        "requests": requests_after - requests_before,
        "failures": failures_after - failures_before,
    }
    print("WINDOW " + json.dumps(window), flush=True)
    environment.runner.quit()


def totals(environment: Environment) -> tuple[int, int]:
    total = environment.stats.total
    return total.num_requests, total.num_failures
