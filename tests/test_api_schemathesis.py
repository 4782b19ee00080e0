"""Schemathesis against ``/api/openapi.json`` over the real server on loopback.

Every operation of the document, with data generated from it (valid and invalid),
authenticated with a management key: no 5xx, every response conforms to the
document (status, content type, body schema, headers), valid input is accepted,
invalid input rejected, and an unauthenticated call is refused. Bounded to a few
examples per operation so the whole run stays well under a minute.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from agentrouter.actor import INSTANCE
from agentrouter.api.openapi import openapi_document
from agentrouter.config import load_settings
from agentrouter.core import Core
from tests.accounts_web import STRONG
from tests.api_fixtures import SECRET, ApiServer, start_api_server

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "12"))
"""Per operation; raise it (SCHEMATHESIS_MAX_EXAMPLES=200) for a longer hunt."""

# What JSON Schema cannot state about the usage range: `since` before `until`, and at
# most 10 080 buckets. Schema-valid values can break those two rules, and then 422
# (naming since/until/by) is the right answer, so it is accepted for these two
# operations and checked precisely in test_api_usage_alerts.py.
RANGE_OPERATIONS = ("getUsage", "getKeyUsage")
# What JSON Schema cannot state about account input either: a password's strength
# (zxcvbn), an address's form beyond its pattern, a code or token being a live one,
# a cursor naming an event. 422 (naming the field) or 400 (a token that is not one)
# is the right answer to such schema-valid input; the routes themselves are tested
# precisely in test_api_accounts.py.
ACCOUNT_INPUT_OPERATIONS = (
    "register",
    "checkInvitation",
    "verifyEmail",
    "resendVerification",
    "signIn",
    "signInTwoFactor",
    "requestPasswordReset",
    "resetPassword",
    "setupFirstAdmin",
    "updateMe",
    "changePassword",
    "confirmTotp",
    "disableTotp",
    "renewRecoveryCodes",
    "createInvitation",
    "updateUser",
    "listAuditEvents",
    "startOAuth",
    "finishOAuth",
    "linkIdentity",
)


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api_server(tmp_path_factory.mktemp("contract"), workers=1)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def contract_key(contract_server: ApiServer) -> str:
    """A manage key owned by an admin, so the routes about one's own account (``/me``)
    run too, not only refuse an instance key."""

    async def seed() -> str:
        env = {"AGENTROUTER_DATA_DIR": str(contract_server.data_dir), "AGENTROUTER_SECRET": SECRET}
        core = await Core.from_settings(load_settings(env=env))
        try:
            acc = core.accounts
            assert acc is not None
            user, _ = await acc.create_user(INSTANCE, email="contract@example.com", password=STRONG, role="admin")
            created = await core.keys.create(name="schemathesis", scope="manage", owner=user.id)
            return created.key
        finally:
            await core.close()

    return asyncio.run(seed())


def _config() -> Any:
    return schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES},
            "operations": [
                {
                    "include-operation-id": list(RANGE_OPERATIONS),
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", "422"]}},
                },
                {
                    "include-operation-id": list(ACCOUNT_INPUT_OPERATIONS),
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429"]
                        }
                    },
                },
            ],
        }
    )


# The document is built in-process, exactly as the server builds what it serves at
# /api/openapi.json (test_served_document_is_the_generated_one checks that), so the
# tests are generated at collection time and sent to the server started for them.
schema = schemathesis.openapi.from_dict(openapi_document(), config=_config())


def test_served_document_is_the_generated_one(contract_server: ApiServer) -> None:
    served = httpx.get(contract_server.url + "/api/openapi.json").json()
    assert served == openapi_document()


@schema.parametrize()
def test_api_conforms_to_its_document(case: Any, contract_server: ApiServer, contract_key: str) -> None:
    # Both security schemes with the same key: schemathesis may fill in x-api-key on its
    # own, and two different keys are refused as ambiguous credentials (by design).
    headers = {"Authorization": f"Bearer {contract_key}", "x-api-key": contract_key}
    response = case.call_and_validate(base_url=contract_server.url, headers=headers)
    assert response.status_code < 500, response.text
