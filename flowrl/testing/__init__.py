"""Testing tools for agent authors: the conformance suite (see `flowrl.testing.conformance`)."""

from flowrl.testing.conformance import (
    CHECK_NAMES,
    Budget,
    CheckResult,
    ConformanceError,
    check_agent,
    conformance_test,
    run_check,
)

__all__ = ["CHECK_NAMES", "Budget", "CheckResult", "ConformanceError", "check_agent", "conformance_test", "run_check"]
