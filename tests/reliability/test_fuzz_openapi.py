"""Schemathesis against openapi.yaml, in volume: over a thousand generated requests to a real
gateway process (API keys, usage recording on SQLite), none answered with a 5xx, every answer
one the document allows, and every error the pinned JSON shape."""

from __future__ import annotations

import json
from collections import Counter

import schemathesis
from helpers import REPO, sha
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loadgen import shape_problem
from process_guard import process_fixture
from procs import start_gateway
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.failures import FailureGroup

API_KEY = "fuzz-test-key-0123456789abcdef"
MIN_EXAMPLES = 1000
# Per operation; the small ones (no parameters) run out of distinct inputs much earlier.
EXAMPLES = {"post": 400, "get": 60, "options": 25}


@process_fixture(scope="module")
def gateway():
    digest = sha(API_KEY)
    config = {
        "demo": True,
        "auth": {"api_keys": [{"id": "fuzz", "sha256": digest}]},
        "cors": {"origins": ["https://app.example"]},
        "limits": {"max_body_bytes": 4 * 1024 * 1024},
    }
    proc = start_gateway(config)
    yield proc
    proc.stop()


def _steer(case) -> None:
    """Past the 404s and 401s: random service names and random credentials stop a request
    before the body is read, so most cases name the real service and carry the valid key."""
    if case.path_parameters and "service" in case.path_parameters:
        case.path_parameters["service"] = "eos"
    if case.headers:
        case.headers.pop("Authorization", None)
        case.headers.pop("X-API-Key", None)
    if case.query:
        case.query.pop("key", None)


def test_a_thousand_generated_requests_conform(gateway) -> None:
    schema = schemathesis.openapi.from_path(REPO / "openapi.yaml")
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(), deeper=st.integers(0, 3))
        @settings(
            max_examples=EXAMPLES[operation.method.lower()],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case, deeper: int) -> None:
            if deeper:  # most cases: a configured service and only our own credentials
                _steer(case)
            response = case.call(base_url=gateway.url, headers={"X-API-Key": API_KEY})
            statuses[response.status_code] += 1
            where = f"{case.method} {case.formatted_path} -> {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.text[:300]}")
                return
            if response.status_code >= 400:
                problem = shape_problem(case.formatted_path, response.status_code, response.content)
                if problem:
                    failures.append(f"{where}: {problem}")
            # Random bytes can match a schema and still not be an image (415/422), so the
            # "schema-valid data must be accepted" check cannot hold for image bodies.
            try:
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            except FailureGroup as exc:
                failures.extend(
                    f"{where}: {' '.join(str(e).split())[:300]}" for e in exc.exceptions
                )

        run()

    total = sum(statuses.values())
    print(json.dumps({"openapi_examples": total, "statuses": dict(sorted(statuses.items()))}))
    assert sorted(set(failures))[:20] == []
    assert total >= MIN_EXAMPLES, f"only {total} generated requests"
    assert "Traceback" not in gateway.log_text()
