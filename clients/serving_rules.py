"""Rules for serving settings and requests that both planes apply, in one place: the control plane when a
deployment is created or changed, the data plane when it reads a spec (its static ``--model-config``, or
a plan from a control plane that predates a rule) and when a request arrives."""

from __future__ import annotations

#: The most warm-up requests a model version may run before it reports READY. Each is a full run of the
#: model, so far fewer are ever useful; without a bound, 2**31 - 1 kept a version loading for good (and,
#: while warm-up requests were built all at once, grew the data plane's memory without limit).
MAX_WARMUP_REQUESTS = 10_000
