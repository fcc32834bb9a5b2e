"""The load generator pools interleaved slices into one result per server: throughput over the summed
measured time, percentiles over every sample (not an average of per-slice percentiles)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.loadgen.core import RunSamples

slices = st.lists(
    st.tuples(
        st.floats(0.1, 5.0),
        st.lists(st.floats(1e-5, 0.5), min_size=1, max_size=200),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=6,
)


@given(slices)
def test_pooled_slices_equal_one_run_over_all_samples(parts: list[tuple[float, list[float], int]]) -> None:
    pooled = RunSamples(concurrency=8)
    for duration, latencies, errors in parts:
        pooled.add(RunSamples(8, duration, [np.asarray(latencies)], errors, "E" if errors else ""))
    result = pooled.result()
    everything = np.concatenate([np.asarray(latencies) for _, latencies, _ in parts]) * 1000.0
    total_s = sum(duration for duration, _, _ in parts)
    assert result.requests == everything.size
    assert result.duration_s == total_s
    assert result.throughput_rps == everything.size / total_s
    assert result.p99_ms == float(np.percentile(everything, 99))
    assert result.p50_ms == float(np.percentile(everything, 50))
    assert result.errors == sum(errors for _, _, errors in parts)
    assert sum(result.histogram_counts) == everything.size


def test_a_run_without_answers_reports_nan_latencies() -> None:
    result = RunSamples(4, 1.0, [], 3, "UNAVAILABLE: down").result()
    assert result.requests == 0 and result.errors == 3 and result.first_error == "UNAVAILABLE: down"
    assert np.isnan(result.p99_ms)
