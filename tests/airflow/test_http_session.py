"""The pooled HTTP session: what it keeps between requests."""

from __future__ import annotations

import httpx

from dagster_airpeer.airflow._http import HttpSession


def test_cookies_set_by_airflow_are_never_sent_back_by_the_client() -> None:
    # The auth backends decide when Airflow's session cookie replaces the password; a client-side jar that
    # stored it would send it on every later request, to every path, whatever the backend decided.
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=from-airflow; Path=/"}, json={"ok": True})

    session = HttpSession(
        name="t",
        base_url="http://127.0.0.1:1",
        auth=None,
        timeout=5.0,
        max_retries=0,
        verify=True,
        transport=httpx.MockTransport(handler),
    )
    for _ in range(2):
        session.call("GET", "/api/v2/version", what="the version", parse=lambda r: r.json())
    assert seen == [None, None]
    assert dict(session.client().cookies) == {}
