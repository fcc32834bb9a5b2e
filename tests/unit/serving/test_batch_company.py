"""How long an idle arrival waits for company (``data_plane.batch_company``): driven by simulated callers
whose company is known, against what each kind of load should get from it."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.batch_company import MAX_PROBE_INTERVAL, CompanyEstimate


def _serve(estimate: CompanyEstimate, company: int, arrivals: int, max_rows: int = 32) -> list[int]:
    """``arrivals`` idle arrivals, each of which finds ``company`` rows (itself included) within the
    delay; returns what each waited for."""
    waits = []
    for _ in range(arrivals):
        wanted = estimate.rows_to_wait_for(max_rows)
        waits.append(wanted)
        estimate.formed(wanted, min(wanted, company))  # the batch leaves once full, or with what came
    return waits


def test_a_lone_caller_goes_at_once_but_for_rare_probes() -> None:
    waits = _serve(CompanyEstimate(), company=1, arrivals=50_000)
    assert waits[0] == 1  # a version's first request finds out nothing about load: at once
    probes = [i for i, wanted in enumerate(waits) if wanted > 1]
    # Probes back off 2, 4, 8, ... arrivals apart, then one in MAX_PROBE_INTERVAL.
    assert len(probes) <= 13 + 50_000 // MAX_PROBE_INTERVAL
    assert all(b - a >= 2 for a, b in itertools.pairwise(probes))
    assert probes[-1] - probes[-2] == MAX_PROBE_INTERVAL + 1


def test_under_load_it_climbs_to_the_company_there_is_and_stays() -> None:
    estimate = CompanyEstimate()
    waits = _serve(estimate, company=6, arrivals=20_000)
    assert estimate.target == 6
    assert waits.index(6) <= 7  # each probe that pays is followed by the next at once
    overshoot = [w for w in waits if w > 6]  # waits that ran out of time
    assert len(overshoot) <= 13 + 20_000 // MAX_PROBE_INTERVAL


def test_when_load_drops_the_next_wait_that_runs_out_brings_it_down() -> None:
    estimate = CompanyEstimate()
    _serve(estimate, company=8, arrivals=200)
    assert estimate.target == 8
    waits = _serve(estimate, company=1, arrivals=1_000)
    assert waits[0] == 8 and estimate.target == 1
    assert sum(1 for w in waits[1:] if w > 1) <= 10


def test_it_never_waits_for_more_than_a_batch_holds() -> None:
    estimate = CompanyEstimate()
    waits = _serve(estimate, company=100, arrivals=500, max_rows=4)
    assert max(waits) == 4 and estimate.target == 4
    assert _serve(estimate, company=100, arrivals=1, max_rows=2) == [2]  # a smaller batch limit


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 60)), min_size=1, max_size=12),
    st.integers(1, 32),
)
def test_against_a_brute_force_view_of_each_phase(phases: list[tuple[int, int]], max_rows: int) -> None:
    """Phases of steady load (company, arrivals). Whatever came before: every wait is for 1..max_rows
    rows, and never more than one row beyond what the previous wait found; and a long enough phase ends
    with the estimate at the company there is (capped by the batch limit)."""
    estimate = CompanyEstimate()
    for company, arrivals in phases:
        found_before = None
        for _ in range(arrivals):
            wanted = estimate.rows_to_wait_for(max_rows)
            assert 1 <= wanted <= max_rows
            if found_before is not None:
                assert wanted <= found_before + 1
            came = min(wanted, company)
            estimate.formed(wanted, came)
            found_before = came
            assert 1 <= estimate.target <= max_rows
    # Then one long phase: the estimate settles on the company there is, from any state.
    company = phases[-1][0]
    _serve(estimate, company, arrivals=2 * MAX_PROBE_INTERVAL + 64, max_rows=max_rows)
    assert estimate.target == min(company, max_rows)
