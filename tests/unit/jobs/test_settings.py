"""The jobs service's settings (control_plane.jobs.settings): a value they refuse is a configuration
error, which ``python -m control_plane`` prints as one line naming the variable and exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.env_values import ConfigurationError
from control_plane.jobs.scheduler import Policy
from control_plane.jobs.settings import JobsSettings


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AETHER_JOBS_POLICY", "bogus", "AETHER_JOBS_POLICY='bogus': expected strict or backfill"),
        ("AETHER_GPUS", "a,a", "AETHER_GPUS='a,a': expected a count or distinct comma-separated names"),
    ],
)
def test_a_value_the_jobs_settings_refuse_is_a_configuration_error(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    """Both were InvalidArgument, an API error: the control plane printed it and exited 1, not the 2 of
    every other setting it refuses (docs/architecture.md, "Settings")."""
    with pytest.raises(ConfigurationError) as refused:
        JobsSettings.from_env(tmp_path, {variable: value})
    assert str(refused.value) == message


def test_the_policy_and_pool_come_from_their_variables(tmp_path: Path) -> None:
    settings = JobsSettings.from_env(tmp_path, {"AETHER_JOBS_POLICY": "backfill", "AETHER_GPUS": "2"})
    assert (settings.policy, settings.pool.devices) == (Policy.BACKFILL, ("0", "1"))


def test_the_supervisors_lease_comes_from_its_variables(tmp_path: Path) -> None:
    defaults = JobsSettings.from_env(tmp_path, {})
    assert (defaults.lease_s, defaults.lease_renew_s) == (15.0, 5.0)
    # The renewal defaults to a third of the lease it is given.
    longer = JobsSettings.from_env(tmp_path, {"AETHER_JOBS_LEASE_S": "60"})
    assert (longer.lease_s, longer.lease_renew_s) == (60.0, 20.0)
    both = JobsSettings.from_env(tmp_path, {"AETHER_JOBS_LEASE_S": "4", "AETHER_JOBS_LEASE_RENEW_S": "0.5"})
    assert (both.lease_s, both.lease_renew_s) == (4.0, 0.5)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AETHER_JOBS_LEASE_S": "0"}, "AETHER_JOBS_LEASE_S: expected a number > 0, got '0'"),
        ({"AETHER_JOBS_LEASE_RENEW_S": "-1"}, "AETHER_JOBS_LEASE_RENEW_S: expected a number > 0, got '-1'"),
        (
            {"AETHER_JOBS_LEASE_S": "5", "AETHER_JOBS_LEASE_RENEW_S": "5"},
            "AETHER_JOBS_LEASE_RENEW_S=5 is not below AETHER_JOBS_LEASE_S=5: the lease would expire before"
            " its holder renews it",
        ),
    ],
)
def test_a_lease_that_cannot_work_is_a_configuration_error(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        JobsSettings.from_env(tmp_path, environ)
    assert str(refused.value) == message


def test_the_bound_on_failing_starts_comes_from_its_variable(tmp_path: Path) -> None:
    assert JobsSettings.from_env(tmp_path, {}).start_give_up_s == 600.0
    given = JobsSettings.from_env(tmp_path, {"AETHER_JOBS_START_GIVE_UP_S": "30"})
    assert given.start_give_up_s == 30.0
    with pytest.raises(ConfigurationError) as refused:
        JobsSettings.from_env(tmp_path, {"AETHER_JOBS_START_GIVE_UP_S": "-1"})
    assert str(refused.value).startswith("AETHER_JOBS_START_GIVE_UP_S: expected a number")
