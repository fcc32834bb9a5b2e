"""What a served call counts as in ``aether_inference_requests_total``: the status its client saw.

Two outcomes are decided by gRPC, outside the handler's own errors:

* grpc.aio ends a handler by cancelling it (``asyncio.CancelledError``) when its client cancels the call
  or the call's deadline passes; the client then sees CANCELLED or DEADLINE_EXCEEDED, and the deadline
  tells which (``time_remaining`` is 0 once it has passed, None when there is none). Every other failure
  has the status ``maps_errors`` answers for it. Both rules are :func:`data_plane.predictor.status_name`,
  which the prediction log uses too.
* gRPC refuses a response larger than the server's ``grpc.max_send_message_length`` after the handler has
  returned it (RESOURCE_EXHAUSTED on the client), too late to be counted; so the handlers compare the
  response's size with that limit themselves and raise :func:`too_large` before returning.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio

from clients.errors import ResourceExhausted
from data_plane.predictor import status_name


def call_status(error: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The status name a call that raised ``error`` ends with, as its client sees it."""
    if isinstance(error, asyncio.CancelledError):  # asks gRPC for the deadline only when it matters
        remaining = context.time_remaining()
        return status_name(error, deadline_passed=remaining is not None and remaining <= 0)
    return status_name(error)


def too_large(size: int, limit: int) -> ResourceExhausted:
    """The error for a response of ``size`` bytes, over ``limit`` (gRPC sends up to ``limit`` bytes)."""
    return ResourceExhausted(
        f"the response is {size} bytes, more than the {limit} this server sends in one message "
        "(max_message_bytes); ask for fewer rows or outputs per call"
    )
