"""The management API's key routes and its authentication, over the real server
(Granian, two workers, loopback): every route, success and failure."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from agentrouter.store.models import UsageDelta
from tests.api_fixtures import ApiServer
from tests.api_fixtures import api_error as error
from tests.waiting import until_sync

pytestmark = [pytest.mark.slow, pytest.mark.store_backends()]

FORBIDDEN = ["id", "digest", "prefix", "created_at", "usage", "last_used_at", "state", "slot", "tag", "key"]


def fresh(server: ApiServer, key: str, *, header: str = "bearer") -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if header == "bearer" else {"x-api-key": key}
    return httpx.Client(base_url=server.url, timeout=30.0, headers=headers)


def get_fresh(server: ApiServer, key: str, path: str = "/api/v1/keys?limit=1") -> httpx.Response:
    """One request on a new connection (so successive calls spread over the workers)."""
    with fresh(server, key) as client:
        return client.get(path)


# --------------------------------------------------------------------------- documents


def test_openapi_document_and_reference_page(api_server: ApiServer) -> None:
    resp = httpx.get(api_server.url + "/api/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    spec = resp.json()
    assert spec["openapi"] == "3.1.0" and spec["info"]["version"] == "1.0.0"
    ops = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert ops >= {  # and the account operations (test_api_accounts.py)
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys/{key_id}"),
        ("PATCH", "/api/v1/keys/{key_id}"),
        ("DELETE", "/api/v1/keys/{key_id}"),
        ("POST", "/api/v1/keys/{key_id}/rotate"),
        ("GET", "/api/v1/keys/{key_id}/usage"),
        ("GET", "/api/v1/usage"),
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/alerts/{alert_id}"),
        ("POST", "/api/v1/alerts/{alert_id}/ack"),
    }
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader", "sessionCookie"}
    assert spec["components"]["schemas"]["KeyCreate"]["additionalProperties"] is False

    page = httpx.get(api_server.url + "/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for item in spec["paths"].values():
        for op in item.values():
            assert f"id='{op['operationId']}'" in html
    # Self-contained: no script, no style sheet or image from anywhere.
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert "src=" not in html and "https://" not in html
    assert httpx.get(api_server.url + "/api", follow_redirects=False).headers["location"] == "/api/docs"


# --------------------------------------------------------------------------- auth


def test_both_headers_authenticate(api_server: ApiServer, admin: dict[str, Any]) -> None:
    for header in ("bearer", "x-api-key"):
        with fresh(api_server, admin["key"], header=header) as client:
            assert client.get("/api/v1/keys").status_code == 200
    with httpx.Client(base_url=api_server.url) as client:
        assert client.get("/api/v1/keys", headers={"authorization": f"bearer {admin['key']}"}).status_code == 200


def test_refusals(api_server: ApiServer) -> None:
    with httpx.Client(base_url=api_server.url) as client:
        err = error(client.get("/api/v1/keys"), 401, "authentication_error")
        assert "Missing API key" in err["message"]
        assert client.get("/api/v1/keys").headers["www-authenticate"].startswith("Bearer")
        error(client.get("/api/v1/keys", headers={"authorization": "Basic dXNlcjpwYXNz"}), 401, "authentication_error")
        err = error(client.get("/api/v1/keys", headers={"x-api-key": "sk-ar-nope"}), 401, "authentication_error")
        assert "Malformed" in err["message"]
        unknown = "sk-ar-" + "A" * 32 + "000000"
        error(client.get("/api/v1/keys", headers={"x-api-key": unknown}), 401, "authentication_error")
        # A well-formed key this server never issued (valid checksum): unknown.
        from agentrouter._core import display_prefix, generate_key

        other = generate_key()
        err = error(client.get("/api/v1/keys", headers={"x-api-key": other}), 401, "authentication_error")
        assert display_prefix(other) in err["message"] and other[13:] not in err["message"]


def test_inference_key_gets_403(api_server: ApiServer) -> None:
    inference = api_server.create_key("--name", "app")
    err = error(get_fresh(api_server, inference["key"]), 403, "permission_error")
    assert "scope" in err["message"] and inference["key"][13:] not in err["message"]


def test_deleted_and_expired_management_keys_get_401_on_every_worker(api_server: ApiServer, http: httpx.Client) -> None:
    doomed = api_server.create_key("--name", "doomed", "--scope", "manage")
    for _ in range(4):  # warm both workers' key tables with it
        assert get_fresh(api_server, doomed["key"]).status_code == 200
    assert http.delete(f"/api/v1/keys/{doomed['id']}").json()["state"] == "deleted"
    for _ in range(6):  # fresh connections land on both workers
        error(get_fresh(api_server, doomed["key"]), 401, "authentication_error")

    # Valid first (a long expiry, so the check cannot race it), then one second left.
    short = api_server.create_key("--scope", "manage", "--expires-in", "1h")
    assert get_fresh(api_server, short["key"]).status_code == 200
    expires_at = http.patch(f"/api/v1/keys/{short['id']}", json={"expires_in": 1}).json()["expires_at"]
    until_sync(lambda: time.time() > expires_at, "the key's expiry", poll=0.05)
    err = error(get_fresh(api_server, short["key"]), 401, "authentication_error")
    assert "expired" in err["message"]


def test_management_key_rate_limit_and_headers(api_server: ApiServer) -> None:
    limited = api_server.create_key("--scope", "manage", "--requests", "3", "--interval", "3600")
    with fresh(api_server, limited["key"]) as client:
        seen = [client.get("/api/v1/keys?limit=1") for _ in range(3)]
        assert [r.status_code for r in seen] == [200, 200, 200]
        assert [int(r.headers["x-ratelimit-remaining"]) for r in seen] == [2, 1, 0]
        assert all(r.headers["x-ratelimit-limit"] == "3" for r in seen)
        assert int(seen[0].headers["x-ratelimit-reset"]) >= int(time.time())
        refused = client.get("/api/v1/keys?limit=1")
        error(refused, 429, "rate_limit_error")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-remaining"] == "0"
        error(client.get("/api/v1/keys/key_missing"), 429, "rate_limit_error")  # refused before routing
    # The errors of a valid key carry the headers too: they count against its limit.
    other = api_server.create_key("--scope", "manage", "--requests", "5", "--interval", "3600")
    missing = get_fresh(api_server, other["key"], "/api/v1/keys/key_missing")
    assert missing.status_code == 404 and missing.headers["x-ratelimit-remaining"] == "4"


# --------------------------------------------------------------------------- create


def test_create_returns_the_key_once(api_server: ApiServer, http: httpx.Client) -> None:
    resp = http.post(
        "/api/v1/keys",
        json={
            "name": "prod backend",
            "rate_limit": {"requests": 100, "interval": 60},
            "metadata": {"environment": "production", "team": "engineering"},
            "expires_in": 86400,
        },
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["key"].startswith("sk-ar-") and len(body["key"]) == 44
    assert "not be shown again" in body["warning"]
    assert body["prefix"] == body["key"][:12] + "…"
    assert body["rate_limit"] == {"requests": 100, "interval": 60.0}
    assert body["scope"] == "inference" and body["state"] == "active"
    assert body["expires_at"] == pytest.approx(body["created_at"] + 86400, abs=1)
    assert resp.headers["location"] == f"/api/v1/keys/{body['id']}"
    # Never shown again: not by get, not by list.
    got = http.get(f"/api/v1/keys/{body['id']}")
    assert got.status_code == 200 and "key" not in got.json()
    assert body["key"] not in http.get("/api/v1/keys?limit=200").text
    assert body["key"][6:] not in got.text


def test_create_defaults_and_manage_scope(http: httpx.Client) -> None:
    body = http.post("/api/v1/keys").json()  # an empty body is {}
    assert body["name"] is None and body["rate_limit"] is None and body["metadata"] == {}
    assert body["expires_at"] is None
    manage = http.post("/api/v1/keys", json={"scope": "manage", "name": "ops"}).json()
    assert manage["scope"] == "manage"


@pytest.mark.parametrize("name", FORBIDDEN)
def test_create_refuses_fields_a_caller_may_not_set(http: httpx.Client, name: str) -> None:
    before = len(http.get("/api/v1/keys?limit=200&include_deleted=true").json()["data"])
    err = error(http.post("/api/v1/keys", json={"name": "x", name: "anything"}), 422, "invalid_request", name)
    assert name in err["message"]
    after = len(http.get("/api/v1/keys?limit=200&include_deleted=true").json()["data"])
    assert after == before  # nothing written


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate_limit": {"requests": 0}}, "rate_limit.requests"),
        ({"rate_limit": {"requests": -5, "interval": 60}}, "rate_limit.requests"),
        ({"rate_limit": {"interval": 60}}, "rate_limit.requests"),
        ({"rate_limit": {"requests": 10, "interval": 0}}, "rate_limit.interval"),
        ({"rate_limit": {"requests": "ten"}}, "rate_limit.requests"),
        ({"rate_limit": {"requests": 10, "burst": 3}}, "rate_limit.burst"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": "production"}, "metadata"),
        ({"name": 42}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": -60}, "expires_in"),
        ({"scope": "admin"}, "scope"),
        ({"metadata": {"blob": "x" * 20000}}, "metadata"),
    ],
)
def test_create_invalid_bodies_name_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    before = len(http.get("/api/v1/keys?limit=200&include_deleted=true").json()["data"])
    error(http.post("/api/v1/keys", json=body), 422, "invalid_request", field)
    assert len(http.get("/api/v1/keys?limit=200&include_deleted=true").json()["data"]) == before


def test_create_malformed_requests(http: httpx.Client) -> None:
    error(
        http.post("/api/v1/keys", content=b'{"name": ', headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )
    error(
        http.post("/api/v1/keys", content=b'["name"]', headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    error(
        http.post("/api/v1/keys", content=b'{"name": "x"}', headers={"content-type": "text/plain"}),
        415,
        "invalid_request",
    )
    error(
        http.post(
            "/api/v1/keys",
            content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
            headers={"content-type": "application/json"},
        ),
        413,
        "invalid_request",
    )


# --------------------------------------------------------------------------- list / get


def test_list_pagination_labels_and_usage_totals(api_server: ApiServer, http: httpx.Client) -> None:
    tag = f"t{time.monotonic_ns()}"
    made = [
        http.post(
            "/api/v1/keys",
            json={
                "name": f"{tag}-{i}",
                "metadata": {"run": tag, "environment": "production" if i % 2 == 0 else "staging", "tier": i},
            },
        ).json()
        for i in range(5)
    ]
    # Usage totals as the gateway writes them.
    api_server.with_store(
        lambda s: s.add_usage(
            [
                UsageDelta(
                    key_id=made[0]["id"],
                    requests=7,
                    successes=5,
                    failures_4xx=1,
                    failures_5xx=1,
                    input_tokens=70,
                    output_tokens=30,
                    latency_ms_total=700.0,
                    last_used_at=time.time(),
                    last_client_ip="10.0.0.7",
                )
            ]
        )
    )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "label": f"run={tag}"}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/api/v1/keys", params=params).json()
        pages += 1
        seen += [k["id"] for k in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3 and seen == [k["id"] for k in made]  # oldest first, no overlap, nothing skipped

    prod = http.get("/api/v1/keys", params=[("label", f"run={tag}"), ("label", "environment=production")]).json()
    assert [k["id"] for k in prod["data"]] == [made[0]["id"], made[2]["id"], made[4]["id"]]
    tier = http.get("/api/v1/keys", params=[("label", f"run={tag}"), ("label", "tier=3")]).json()
    assert [k["id"] for k in tier["data"]] == [made[3]["id"]]
    present = http.get("/api/v1/keys", params=[("label", f"run={tag}"), ("label", "environment")]).json()
    assert len(present["data"]) == 5
    assert http.get("/api/v1/keys", params={"label": "environment=nowhere"}).json()["data"] == []

    first = next(k for k in prod["data"] if k["id"] == made[0]["id"])
    u = first["usage"]
    assert (u["requests"], u["successes"], u["failures_4xx"], u["failures_5xx"]) == (7, 5, 1, 1)
    assert (u["input_tokens"], u["output_tokens"], u["latency_ms_avg"]) == (70, 30, 100.0)
    assert first["last_used_at"] == u["last_used_at"] and u["last_client_ip"] == "10.0.0.7"
    for k in prod["data"]:
        assert set(k) >= {"name", "prefix", "created_at", "last_used_at", "rate_limit", "usage"}


def test_list_bad_parameters(http: httpx.Client) -> None:
    error(http.get("/api/v1/keys?limit=0"), 422, "invalid_request", "limit")
    error(http.get("/api/v1/keys?limit=201"), 422, "invalid_request", "limit")
    error(http.get("/api/v1/keys?limit=many"), 422, "invalid_request", "limit")
    error(http.get("/api/v1/keys?cursor=garbage"), 422, "invalid_request", "cursor")
    error(http.get("/api/v1/keys?limit=1&limit=2"), 422, "invalid_request", "limit")
    error(http.get("/api/v1/keys?include_deleted=perhaps"), 422, "invalid_request", "include_deleted")


def test_get_and_unknown_ids(http: httpx.Client) -> None:
    made = http.post("/api/v1/keys", json={"name": "lookup"}).json()
    got = http.get(f"/api/v1/keys/{made['id']}").json()
    assert got["id"] == made["id"] and got["name"] == "lookup"
    for method, path in [
        ("GET", "/api/v1/keys/key_0000000000000000"),
        ("PATCH", "/api/v1/keys/key_0000000000000000"),
        ("DELETE", "/api/v1/keys/key_0000000000000000"),
        ("POST", "/api/v1/keys/key_0000000000000000/rotate"),
        ("GET", "/api/v1/keys/key_0000000000000000/usage"),
    ]:
        kwargs: dict[str, Any] = {"json": {}} if method in ("PATCH", "POST") else {}
        err = error(http.request(method, path, **kwargs), 404, "not_found")
        assert "key_0000000000000000" in err["message"]


def test_unknown_paths_and_methods(api_server: ApiServer, http: httpx.Client) -> None:
    error(http.get("/api/v1/nothing"), 404, "not_found")
    error(httpx.get(api_server.url + "/elsewhere"), 404, "not_found")  # outside /api: no key asked for
    error(http.get("/api/v2/keys"), 404, "not_found")
    resp = http.put("/api/v1/keys/key_x", json={})
    error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "DELETE, GET, PATCH"
    assert http.delete("/api/v1/keys").headers["allow"] == "GET, POST"
    assert http.post("/api/openapi.json").status_code == 405


# --------------------------------------------------------------------------- update


def test_update_fields(http: httpx.Client) -> None:
    made = http.post("/api/v1/keys", json={"name": "before", "metadata": {"a": 1}}).json()
    url = f"/api/v1/keys/{made['id']}"
    body = http.patch(
        url,
        json={
            "name": "after",
            "rate_limit": {"requests": 50, "interval": 10},
            "metadata": {"environment": "staging"},
            "expires_in": 3600,
        },
    ).json()
    assert body["name"] == "after" and body["rate_limit"] == {"requests": 50, "interval": 10.0}
    assert body["metadata"] == {"environment": "staging"}  # replaced whole
    assert body["expires_at"] == pytest.approx(time.time() + 3600, abs=5)
    body = http.patch(url, json={"rate_limit": None, "expires_in": None, "name": None}).json()
    assert body["rate_limit"] is None and body["expires_at"] is None and body["name"] is None
    unchanged = http.patch(url, json={}).json()
    assert unchanged == http.get(url).json()
    assert http.patch(url).status_code == 200  # no body at all: no change either


@pytest.mark.parametrize("name", [*FORBIDDEN, "scope", "owner"])
def test_update_refuses_fields_a_caller_may_not_set(http: httpx.Client, name: str) -> None:
    made = http.post("/api/v1/keys", json={"name": "guarded"}).json()
    url = f"/api/v1/keys/{made['id']}"
    before = http.get(url).json()
    error(http.patch(url, json={"name": "changed", name: "x"}), 422, "invalid_request", name)
    assert http.get(url).json() == before  # nothing half-written: the name did not change either


def test_update_invalid_values(http: httpx.Client) -> None:
    made = http.post("/api/v1/keys", json={"name": "v"}).json()
    url = f"/api/v1/keys/{made['id']}"
    error(http.patch(url, json={"rate_limit": {"requests": 0}}), 422, "invalid_request", "rate_limit.requests")
    error(http.patch(url, json={"metadata": None}), 422, "invalid_request", "metadata")
    error(http.patch(url, json={"expires_in": "soon"}), 422, "invalid_request", "expires_in")
    assert http.get(url).json()["name"] == "v"


# --------------------------------------------------------------------------- delete / rotate


def test_delete(http: httpx.Client) -> None:
    made = http.post("/api/v1/keys", json={"name": "gone"}).json()
    url = f"/api/v1/keys/{made['id']}"
    deleted = http.delete(url).json()
    assert deleted["state"] == "deleted" and deleted["deleted_at"] is not None
    error(http.get(url), 404, "not_found")
    assert http.get(url, params={"include_deleted": "true"}).json()["state"] == "deleted"
    error(http.delete(url), 404, "not_found")
    error(http.patch(url, json={"name": "x"}), 404, "not_found")
    error(http.post(url + "/rotate", json={}), 404, "not_found")
    ids = [k["id"] for k in http.get("/api/v1/keys?limit=200").json()["data"]]
    assert made["id"] not in ids
    ids = [k["id"] for k in http.get("/api/v1/keys?limit=200&include_deleted=true").json()["data"]]
    assert made["id"] in ids


def test_rotate_with_grace(api_server: ApiServer, http: httpx.Client) -> None:
    old = api_server.create_key("--name", "rotating", "--scope", "manage", "--metadata", '{"team": "ops"}')
    # A grace period far longer than the checks made within it.
    resp = http.post(f"/api/v1/keys/{old['id']}/rotate", json={"grace_seconds": 4})
    assert resp.status_code == 201, resp.text
    new = resp.json()
    assert new["key"] != old["key"] and new["id"] != old["id"]
    assert (new["name"], new["scope"], new["metadata"]) == ("rotating", "manage", {"team": "ops"})
    old_row = http.get(f"/api/v1/keys/{old['id']}").json()
    assert old_row["rotated_to"] == new["id"] and old_row["expires_at"] is not None
    err = error(http.post(f"/api/v1/keys/{old['id']}/rotate", json={}), 409, "conflict")
    assert "already rotated" in err["message"]
    assert get_fresh(api_server, old["key"]).status_code == 200  # within the grace period
    assert get_fresh(api_server, new["key"]).status_code == 200
    until_sync(lambda: time.time() > old_row["expires_at"], "the end of the grace period", poll=0.05)
    error(get_fresh(api_server, old["key"]), 401, "authentication_error")
    assert get_fresh(api_server, new["key"]).status_code == 200
    error(
        http.post(f"/api/v1/keys/{new['id']}/rotate", json={"grace_seconds": -1}),
        422,
        "invalid_request",
        "grace_seconds",
    )
    error(http.post(f"/api/v1/keys/{new['id']}/rotate", json={"grace": 5}), 422, "invalid_request", "grace")


def test_rotate_without_grace_stops_the_old_key_at_once(api_server: ApiServer, http: httpx.Client) -> None:
    old = api_server.create_key("--scope", "manage")
    new = http.post(f"/api/v1/keys/{old['id']}/rotate").json()
    error(get_fresh(api_server, old["key"]), 401, "authentication_error")
    assert get_fresh(api_server, new["key"]).status_code == 200


def test_concurrent_writes_all_succeed(api_server: ApiServer, admin: dict[str, Any]) -> None:
    """Many creates, updates and acknowledgements at once on each worker: every one is
    answered (the worker's tasks share one store connection, transactions in turn)."""
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> int:
        with fresh(api_server, admin["key"]) as client:
            made = client.post("/api/v1/keys", json={"name": f"burst-{i}"})
            if made.status_code != 201:
                return made.status_code
            return client.patch(f"/api/v1/keys/{made.json()['id']}", json={"metadata": {"i": i}}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(create, range(32)))
    assert statuses == [200] * 32
