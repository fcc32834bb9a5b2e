"""What a served call counts as in ``aether_inference_requests_total``: the status its client saw.

grpc.aio ends a handler by cancelling it (``asyncio.CancelledError``) when its client cancels the call or
the call's deadline passes; the client then sees CANCELLED or DEADLINE_EXCEEDED, and the deadline tells
which (``time_remaining`` is 0 once it has passed, None when there is none). Every other failure has the
status ``maps_errors`` answers for it (:func:`data_plane.predictor.status_name`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio

from data_plane.predictor import status_name


def call_status(error: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The status name a call that raised ``error`` ends with, as its client sees it."""
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return status_name(error)
