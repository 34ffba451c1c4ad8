"""Sends protocol requests to a live endpoint; the only place the contract suites do HTTP."""

from __future__ import annotations

import requests

from .base import HttpRequest, Prediction, Protocol


class ClassifierClient:
    """Classify images against one running server, with a bounded timeout on every call."""

    def __init__(
        self,
        base_url: str,
        protocol: Protocol,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.protocol = protocol
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._session = requests.Session()

    def send(self, request: HttpRequest, timeout: float | None = None) -> requests.Response:
        """Send a prepared request as is (robustness cases use this for malformed requests)."""
        return self._session.request(
            request.method,
            self.base_url + request.path,
            data=request.body,
            headers={**self.headers, **request.headers},
            timeout=timeout or self.timeout,
        )

    def classify(self, image: bytes) -> Prediction:
        """Top-5 prediction for encoded image bytes; raises ProtocolError on any non-prediction."""
        response = self.send(self.protocol.encode(image))
        return self.protocol.decode(response.status_code, response.content)

    def close(self) -> None:
        self._session.close()
