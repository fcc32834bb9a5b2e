"""The enum check configs go through: undefined numbers and, where required, UNSPECIFIED are named with
the values allowed, in nested and repeated fields too."""

from __future__ import annotations

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.proto_enums import enum_problems


def test_defined_values_pass_and_unspecified_passes_unless_required() -> None:
    assert enum_problems(pb.MonitorConfig(test=pb.DRIFT_TEST_KS)) == []
    assert enum_problems(pb.MonitorConfig()) == []
    assert enum_problems(pb.MonitorConfig(), required=["task"]) == [
        "task is required: use one of TASK_TYPE_CLASSIFICATION, TASK_TYPE_REGRESSION"
    ]


def test_undefined_values_are_named_in_nested_and_repeated_fields() -> None:
    report = pb.DriftReport(status=7, features=[pb.FeatureDrift(), pb.FeatureDrift()])
    (problem,) = enum_problems(report)
    assert problem.startswith("status 7 is not a value of DriftStatus: use one of DRIFT_STATUS_UNSPECIFIED")
    response = pb.GetDriftReportsResponse(reports=[pb.DriftReport(test=9)])
    assert enum_problems(response) == [
        "reports.test 9 is not a value of DriftTest: use one of DRIFT_TEST_UNSPECIFIED, DRIFT_TEST_PSI,"
        " DRIFT_TEST_JSD, DRIFT_TEST_KS, DRIFT_TEST_WASSERSTEIN"
    ]
