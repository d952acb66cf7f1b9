"""The API against its own contract: schemathesis over /openapi.json, every operation.

In process (ASGI transport, no network), with a trained small champion on SQLite and PostgreSQL
and a bounded number of examples per operation: no answer is a 5xx, and every answer's status,
content type, headers and body are the ones the schema declares.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi

from app.main import create_app
from app.routes import jobs as job_routes
from tests.app.conftest import OPS_KEY, Served

# Examples per operation: enough to reach each parameter's edges, bounded for a 2-core CI box.
MAX_EXAMPLES = 20
# Not positive_data_acceptance: business rules answer some schema-valid requests with a declared
# 422 (a horizon beyond the champion's, a SKU without history, a discontinued SKU).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def contract_failures(app: Any, max_examples: int = MAX_EXAMPLES) -> dict[str, str]:
    """Each operation's first failure (its schemathesis report), for every operation that fails.

    The operations are driven with hypothesis directly: schemathesis' own pytest plugin does not
    run under pytest 9.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    try:
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
                suppress_health_check=list(HealthCheck),
            )
            def conforms(case: Any) -> None:
                case.call_and_validate(headers={"X-API-Key": OPS_KEY}, checks=CHECKS)

            try:
                conforms()
            except (Exception, FailureGroup) as exc:
                failures[operation.label] = str(exc)
    finally:
        # schemathesis keeps an app's lifespan running for the process: end it with the test.
        asgi.shutdown_lifespans()
    return failures


def test_api_conforms_to_its_schema(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # A queued retrain would start a training process per example: the job is queued (and the
    # next one answered 409) as usual, only its worker process is not started.
    monkeypatch.setattr(job_routes, "spawn_worker", lambda job_id, _settings: None)
    failures = contract_failures(create_app(served.settings))
    assert not failures, "\n\n".join(f"{op}:\n{report}" for op, report in failures.items())
