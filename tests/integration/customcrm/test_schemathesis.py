"""Property-based API tests: schemathesis drives the live sandbox from its own /openapi.json."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.customcrm.conftest import TOKEN

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


def test_openapi_document_holds_against_the_live_sandbox(start_sandbox):
    server = start_sandbox(seed=20, rate_limit=None)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json").exclude(path_regex="^/_sandbox/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 18  # 6 operations x 3 resources
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)

            check()
    stats = server.app.state.sandbox.control.stats.snapshot()["requests"]
    print(stats)
    # the run really exercised the API, with successes as well as rejections
    assert sum(sum(v.values()) for v in stats.values()) > 300
    for label in ("POST /api/v1/products", "PATCH /api/v1/orders/{id}", "POST /api/v1/users/bulk",
                  "GET /api/v1/orders"):
        assert any(code.startswith("2") for code in stats[label]), (label, stats[label])
