"""The per-request latency floor of the Airflow under test, measured with plain httpx from the orchestrator.

Each figure is the median (and 90th percentile) of sequential requests, one at a time, so the benchmark
figures can be read against what a single request physically costs on this server:

* the unauthenticated health check (the HTTP and framework floor);
* the cheapest authenticated GET (one pool, `limit=1`);
* one page of 100 finished DAG runs ordered by end date, the sensors' query (what they read per request).

Airflow 2.11 is measured with basic auth on a new connection per request (what dagster-airlift does: a new
`requests` session per call) and with the session cookie of a login through the webserver's form (what
airpeer sends from its second request on). Airflow 3.3 is measured with a JWT on a kept-alive connection.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx


def _sample(call: Callable[[], httpx.Response], samples: int) -> dict[str, float]:
    call()  # warm-up: imports, first connection, caches of the server
    times: list[float] = []
    dropped = 0
    while len(times) < samples:
        started = time.perf_counter()
        try:
            response = call()
        except httpx.TransportError:
            # A kept-alive connection the server closed just as it was reused (uvicorn closes idle ones after
            # 5 s): not a latency, take the sample again on a new connection (a few times, not forever).
            dropped += 1
            if dropped > samples:
                raise
            continue
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    times.sort()
    return {
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * times[max(0, int(0.9 * len(times)) - 1)],
        "samples": len(times),
    }


def _ui_login(client: httpx.Client, url: str, username: str, password: str) -> None:
    """Log in through Airflow 2's login form; the client keeps the session cookie."""
    page = client.get(f"{url}/login/")
    page.raise_for_status()
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    if match is None:
        raise RuntimeError("no csrf_token in Airflow 2's login form")
    client.post(
        f"{url}/login/", data={"username": username, "password": password, "csrf_token": match.group(1)}
    )
    probe = client.get(f"{url}/api/v1/pools", params={"limit": 1})
    if probe.status_code != 200:
        raise RuntimeError(f"the session cookie from the login form was refused: HTTP {probe.status_code}")


def measure(
    url: str, major: int, username: str, password: str, samples: int = 20, since: float | None = None
) -> list[dict[str, Any]]:
    """Return one row per (request, authentication) measured on the instance at ``url``.

    The page of runs has the sensors' query shape: ``POST /dags/~/dagRuns/list``, terminal states, ended
    since ``since`` (epoch seconds; default: a day ago), ordered by end date, 100 per page.
    """
    rows: list[dict[str, Any]] = []
    api = f"{url}/api/v2" if major == 3 else f"{url}/api/v1"
    since_iso = datetime.fromtimestamp(since if since is not None else time.time() - 86400, tz=timezone.utc)
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {
        "health": ("GET", f"{url}/api/v2/monitor/health" if major == 3 else f"{api}/health", {}),
        "cheapest": ("GET", f"{api}/pools", {"params": {"limit": 1}}),
        "runs": (
            "POST",
            f"{api}/dags/~/dagRuns/list",
            {
                "json": {
                    "states": ["success", "failed"],
                    "end_date_gte": since_iso.isoformat(),
                    "order_by": "end_date",
                    "page_offset": 0,
                    "page_limit": 100,
                }
            },
        ),
    }
    labels = {
        "health": "GET /health",
        "cheapest": "GET /pools?limit=1 (cheapest authenticated GET)",
        "runs": "POST /dags/~/dagRuns/list, one page of 100 runs",
    }

    def add(key: str, auth: str, figures: dict[str, float]) -> None:
        rows.append({"request": labels[key], "auth": auth, **figures})

    def on(client: httpx.Client, key: str, **extra: Any) -> Callable[[], httpx.Response]:
        method, target, kwargs = requests[key]
        return lambda: client.request(method, target, **kwargs, **extra)

    if major == 2:
        basic = httpx.BasicAuth(username, password)

        def fresh(key: str, **extra: Any) -> Callable[[], httpx.Response]:
            def call() -> httpx.Response:
                # A new client per request: a new connection and no cookie, as dagster-airlift does.
                with httpx.Client(timeout=60) as client:
                    return on(client, key, **extra)()

            return call

        add("health", "none, new connection", _sample(fresh("health"), samples))
        add("cheapest", "basic auth, new connection", _sample(fresh("cheapest", auth=basic), samples))
        add("runs", "basic auth, new connection", _sample(fresh("runs", auth=basic), samples))
        with httpx.Client(timeout=60) as client:
            # The API never hands out a session (Airflow 2 exempts /api/v1 from saving sessions): log in through
            # the webserver's login form, then send only the cookie (the `session` auth backend accepts it).
            _ui_login(client, url, username, password)
            add("cheapest", "session cookie, kept-alive client", _sample(on(client, "cheapest"), samples))
            add("runs", "session cookie, kept-alive client", _sample(on(client, "runs"), samples))
        return rows

    token_response = httpx.post(
        f"{url}/auth/token", json={"username": username, "password": password}, timeout=60
    )
    token_response.raise_for_status()
    headers = {"Authorization": f"Bearer {token_response.json()['access_token']}"}
    with httpx.Client(timeout=60) as client:
        add("health", "none, kept-alive connection", _sample(on(client, "health"), samples))
        add(
            "cheapest",
            "JWT, kept-alive connection",
            _sample(on(client, "cheapest", headers=headers), samples),
        )
        add("runs", "JWT, kept-alive connection", _sample(on(client, "runs", headers=headers), samples))
    with httpx.Client(timeout=60) as client:
        login = {"username": username, "password": password}
        figures = _sample(lambda: client.post(f"{url}/auth/token", json=login), samples)
    rows.append({"request": "POST /auth/token", "auth": "password", **figures})
    return rows
