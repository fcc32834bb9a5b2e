"""``ListJobs`` pages on each supported database: jobs submitted, and jobs changing state out of a
filtered listing, between two page calls neither repeat nor skip a job that was in the listing
throughout (offset pages did); concatenated pages equal a brute-force Python ordering (newest first, job
id breaking ties) for random submission times, states, filters and page sizes; and a malformed or
foreign page token is INVALID_ARGUMENT naming the problem; and over gRPC a page of large specs is cut by
its size, so the listing never outgrows the 4 MiB message limit."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import InvalidArgument
from clients.sdk.jobs import JobsClient
from control_plane.db import create_db_engine, create_session_factory, pages, upgrade_to_head, write_session
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.store import JobState
from control_plane.jobs.tables import JobRow
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import ThreadedControlPlane, job_spec, jobs_settings
from tests.integration.jobs.test_cli import aetherctl

STATES = (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_CANCELLED)


@pytest.fixture
def jobs(tmp_path: Path, db_url: str) -> Iterator[tuple[JobService, sessionmaker[Session]]]:
    """The jobs core without a supervisor: submitted jobs stay QUEUED unless a test moves them."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    service = JobService(
        sessions,
        jobs_settings(tmp_path),
        FeatureRegistry(sessions, ()),
        OfflineStore(str(tmp_path / "offline")),
    )
    yield service, sessions
    engine.dispose()


def _submit(service: JobService, name: str) -> str:
    return service.submit(spec_from_mapping(job_spec(name)), actor="t").job_id


def _set(sessions: sessionmaker[Session], job_id: str, **values: object) -> None:
    with write_session(sessions) as session:
        session.execute(update(JobRow).where(JobRow.job_id == job_id).values(**values))


def test_jobs_submitted_or_leaving_the_filter_between_pages_neither_repeat_nor_skip(
    jobs: tuple[JobService, sessionmaker[Session]],
) -> None:
    service, sessions = jobs
    ids = {f"old{index}": _submit(service, f"old{index}") for index in range(12)}
    for index, job_id in enumerate(ids.values()):  # three jobs per submission time: ties on the key
        _set(sessions, job_id, submitted_at_us=1_000 + index // 3)
    names = {job_id: name for name, job_id in ids.items()}

    # Unfiltered: a job submitted between two pages is the newest, ahead of the cursor.
    page, token = service.list(page_size=5)
    listed = [names[job.job_id] for job in page]
    number = 0
    while token:
        number += 1
        names[_submit(service, f"new{number}")] = f"new{number}"
        page, token = service.list(page_size=5, page_token=token)
        listed += [names[job.job_id] for job in page]
    assert len(listed) == len(set(listed)), listed
    assert set(ids) <= set(listed)

    # Filtered on QUEUED: a job already listed is cancelled, leaving the result set behind the cursor.
    page, token = service.list([pb.JOB_STATE_QUEUED], page_size=4)
    listed = [names[job.job_id] for job in page]
    left: list[str] = []
    while token:
        left.append(next(name for name in listed if name.startswith("old") and name not in left))
        service.cancel(ids[left[-1]], actor="t")
        page, token = service.list([pb.JOB_STATE_QUEUED], page_size=4, page_token=token)
        listed += [names[job.job_id] for job in page]
    assert len(listed) == len(set(listed)), listed
    assert set(ids) - set(left) <= set(listed), sorted(set(ids) - set(left) - set(listed))


def test_concatenated_pages_equal_the_reference(jobs: tuple[JobService, sessionmaker[Session]]) -> None:
    service, sessions = jobs
    job_ids = [_submit(service, f"j{index}") for index in range(16)]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        times=st.lists(st.integers(1, 5), min_size=len(job_ids), max_size=len(job_ids)),
        states=st.lists(st.sampled_from(STATES), min_size=len(job_ids), max_size=len(job_ids)),
        wanted=st.lists(st.sampled_from(STATES), max_size=3),
        page_size=st.integers(1, 7),
    )
    def check(times: list[int], states: list[int], wanted: list[int], page_size: int) -> None:
        for job_id, at, state in zip(job_ids, times, states, strict=True):
            _set(sessions, job_id, submitted_at_us=at, state=JobState.from_proto(state).value)
        rows = sorted(zip(job_ids, times, states, strict=True), key=lambda row: row[0])
        rows.sort(key=lambda row: row[1], reverse=True)  # stable: newest first, then job id
        expected = [job_id for job_id, _, state in rows if not wanted or state in wanted]
        page, token = service.list(wanted, page_size=page_size)
        found = [job.job_id for job in page]
        while token:
            assert len(page) == page_size
            page, token = service.list(wanted, page_size=page_size, page_token=token)
            found += [job.job_id for job in page]
        assert found == expected

    check()


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def test_malformed_and_foreign_tokens_are_invalid_arguments_naming_the_problem(
    jobs: tuple[JobService, sessionmaker[Session]],
) -> None:
    service, _ = jobs
    for index in range(3):
        _submit(service, f"j{index}")
    token = service.list([pb.JOB_STATE_QUEUED], page_size=1)[1]
    assert token
    for bad in ("not-a-token", "%%%", _token({"offset": 3}), _token(7)):
        with pytest.raises(InvalidArgument, match="malformed"):
            service.list([pb.JOB_STATE_QUEUED], page_token=bad)
    with pytest.raises(InvalidArgument, match="different state filter"):
        service.list([pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING], page_token=token)
    with pytest.raises(InvalidArgument, match="issued by 'ListRuns', not by ListJobs"):
        service.list(
            [pb.JOB_STATE_QUEUED], page_token=_token({"listing": "ListRuns", "scope": "", "after": []})
        )
    payload = json.loads(base64.urlsafe_b64decode(token))
    for key in ([1.5, payload["after"][1]], [payload["after"][0]], [payload["after"][0], 3]):
        with pytest.raises(InvalidArgument, match="malformed"):
            service.list([pb.JOB_STATE_QUEUED], page_token=_token({**payload, "after": key}))
    # The order of the states in the filter does not matter.
    service.list(
        [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING],
        page_token=service.list([pb.JOB_STATE_RUNNING, pb.JOB_STATE_QUEUED], page_size=1)[1],
    )


def test_a_negative_page_size_is_an_invalid_argument_naming_it(
    jobs: tuple[JobService, sessionmaker[Session]],
) -> None:
    """Only an in-process caller can pass one (the proto field is uint32). It went into ``LIMIT`` as
    ``size + 1``: -1 gave ``LIMIT 0``, an empty page with no token (the listing looked empty), and -5 a
    negative limit, which SQLite reads as none (every job in one page) and PostgreSQL refuses."""
    service, _ = jobs
    for index in range(3):
        _submit(service, f"j{index}")
    for size in (-1, -5):
        with pytest.raises(InvalidArgument, match=f"page_size must be 0 .* to 1000, got {size}"):
            service.list(page_size=size)
    # The bounds the gRPC path can send still page: 0 is the default, above the maximum is clamped.
    assert len(service.list(page_size=0)[0]) == 3
    assert len(service.list(page_size=2**32 - 1)[0]) == 3


#: Eight 6,000-character hyperparameters: 100 such jobs made a 4.8 MB ListJobs reply, over gRPC's 4 MiB,
#: and every listing of them failed RESOURCE_EXHAUSTED.
_BIG_HYPERPARAMETERS = {f"config_{index}": "y" * 6000 for index in range(8)}


def test_a_page_of_large_jobs_is_cut_by_size_over_grpc_and_loses_no_job(
    control_plane: ThreadedControlPlane, client: JobsClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # An entrypoint that does not exist: each job is FAILED at once, and no process is started.
    spec = {"name": "big", "entrypoint": {"module": "no_such_module_here"}}
    submitted = {client.submit({**spec, "hyperparameters": _BIG_HYPERPARAMETERS}).job_id for _ in range(100)}

    first, token = client.list_page()  # the default page size, 100
    assert 0 < len(first) < 100 and token
    assert sum(pages.item_bytes(job) for job in first) <= pages.MAX_PAGE_BYTES
    seen = [job.job_id for job in first]
    while token:
        page, token = client.list_page(page_token=token)
        assert page and sum(pages.item_bytes(job) for job in page) <= pages.MAX_PAGE_BYTES
        seen += [job.job_id for job in page]
    assert len(seen) == len(set(seen)) == 100 and set(seen) == submitted
    assert all(dict(job.spec.hyperparameters) == _BIG_HYPERPARAMETERS for job in first)

    assert {job.job_id for job in client.list()} == submitted
    code, out = aetherctl(capsys, control_plane.address, "jobs", "list", "--limit", "100")
    assert code == 0 and all(job_id in out for job_id in submitted)
