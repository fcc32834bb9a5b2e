"""Alerts: always to the log (logger ``aether.control_plane.monitoring``, WARNING), and as an HTTP POST
of a JSON object to the deployment's webhook when one is configured.

Payload: ``{"kind": "data_drift" | "prediction_drift" | "performance_degradation", "deployment": ...,
"message": ..., ...details}`` — numbers that are not finite become ``null``. A webhook that fails or
times out is logged and not retried: the report itself is stored either way, so nothing is lost. The
log names the webhook only as :func:`~control_plane.monitoring.webhooks.redact_webhook` shows it: the
URL's path or userinfo is often its credential (a Slack webhook's token), and logs are read by many.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import math
import urllib.error
import urllib.request
from typing import Any

from control_plane.monitoring.webhooks import redact_text, redact_webhook

_log = logging.getLogger("aether.control_plane.monitoring")
USER_AGENT = "aether-monitor/1"


class Alerter:
    def __init__(self, default_webhook_url: str = "", timeout_s: float = 5.0) -> None:
        self.default_webhook_url = default_webhook_url
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0

    async def alert(self, payload: dict[str, Any], webhook_url: str = "") -> bool:
        """Logs the alert and POSTs it; True when the webhook answered 2xx (or none is configured)."""
        _log.warning("monitoring alert: %s", payload.get("message", payload))
        url = webhook_url or self.default_webhook_url
        if not url:
            return True
        body = json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False).encode()
        try:
            await asyncio.to_thread(self._post, url, body)
        # A URL urllib cannot post to (a password holding a raw '/' is read as a port) fails this webhook
        # like an unreachable one, not the monitor's or retraining's tick. Its message quotes the piece of
        # the URL it could not read, so only its kind is logged.
        except (http.client.InvalidURL, ValueError) as exc:
            self._failed(url, f"{type(exc).__name__}: not a URL this client can post to")
            return False
        # HTTPException: a receiver answering something other than HTTP (BadStatusLine), which escaped
        # the tick before like an invalid URL.
        except (OSError, urllib.error.URLError, TimeoutError, http.client.HTTPException) as exc:
            self._failed(url, redact_text(str(exc), url))
            return False
        self.sent += 1
        return True

    def _failed(self, url: str, reason: str) -> None:
        self.failed += 1
        _log.error("monitoring webhook %s failed: %s", redact_webhook(url), reason)

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
