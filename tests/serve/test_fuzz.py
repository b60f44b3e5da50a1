"""Fuzzing from the app's own OpenAPI schema (schemathesis), in process over ASGI: no request gets a 5xx.

Bounded: a few dozen examples per operation and no deadline per example (the machine is
shared); nothing leaves the process.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from deepstrata.serve import app  # noqa: E402

EXAMPLES = 25


def fuzz(served) -> int:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served)
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            nonlocal calls
            calls += 1
            case.call_and_validate(checks=[not_a_server_error])

        check()
    return calls


@pytest.mark.parametrize("kind", ["image", "text", "recommend"])
def test_no_request_from_the_schema_gets_a_5xx(kind, request):
    run = request.getfixturevalue(f"{kind}_run")
    assert fuzz(app(run, max_wait_ms=0)) > 10
