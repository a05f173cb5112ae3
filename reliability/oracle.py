"""What a real Airflow says has completed, read without airpeer's client (an independent oracle).

Plain httpx against the REST API (v2 with a JWT, v1 with basic auth), paging the runs list by offset in
primary-key order; the tests and the soak compare airpeer's events with this.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx

from .ledger import Completion, completion_key


def _client(stack: Any, timeout: float = 30.0) -> httpx.Client:
    if stack.major == 3:
        response = httpx.post(
            f"{stack.url}/auth/token",
            json={"username": stack.username, "password": stack.password},
            timeout=timeout,
        )
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return httpx.Client(base_url=f"{stack.url}/api/v2", headers=headers, timeout=timeout)
    return httpx.Client(
        base_url=f"{stack.url}/api/v1", auth=(stack.username, stack.password), timeout=timeout
    )


def finished_runs(stack: Any, since: datetime, *, client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """Every run in state success or failed whose end date is at or after `since`, as Airflow serves it."""
    own = client is None
    http = client or _client(stack)
    try:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            body = {
                "states": ["success", "failed"],
                "end_date_gte": since.astimezone(timezone.utc).isoformat(),
                "order_by": "id",
                "page_offset": offset,
                "page_limit": 100,
            }
            response = http.post("/dags/~/dagRuns/list", json=body)
            response.raise_for_status()
            page = response.json()
            out.extend(page["dag_runs"])
            offset += len(page["dag_runs"])
            if not page["dag_runs"] or offset >= page["total_entries"]:
                return out
    finally:
        if own:
            http.close()


def completions(stack: Any, since: datetime, *, client: httpx.Client | None = None) -> set[Completion]:
    """(dag_id, run_id, end_date) of every completion at or after `since`."""
    return {
        completion_key(r["dag_id"], r["dag_run_id"], r["end_date"])
        for r in finished_runs(stack, since, client=client)
        if r.get("end_date")
    }


__all__ = ["completions", "finished_runs"]
