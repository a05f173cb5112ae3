"""Run in Airflow's environment, without Dagster: proxy Airflow tasks to Dagster, one at a time.

At the end of a DAG file:

```python
from pathlib import Path

from dagster_airpeer.in_airflow import load_proxied_state_from_yaml, proxying_to_dagster

proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(Path(__file__).parent / "proxied_state"),
)
```

A task marked `proxied: true` in `proxied_state/<dag_id>.yaml` then asks Dagster to materialize its mapped
assets (the job `dagster_airpeer.migrate.proxy_jobs` defines for it), waits, and succeeds or fails with the
Dagster run. Names that need Airflow are imported on first use, so the YAML and GraphQL parts import alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
        DagsterDeadlineError,
        DagsterGraphQLClient,
        DagsterJobNotFoundError,
        DagsterProxyError,
        DagsterRequestError,
        DagsterRunFailedError,
        DagsterRunProxy,
        DagsterUnreachableError,
        ProxyTask,
    )
    from .naming import proxy_job_name
    from .operator import DagsterProxyOperator
    from .proxied_state import (
        DagProxiedState,
        ProxiedState,
        ProxiedStateError,
        TaskProxiedState,
        load_proxied_state_from_yaml,
    )
    from .proxying import proxying_to_dagster

__all__ = [
    "DagProxiedState",
    "DagsterDeadlineError",
    "DagsterGraphQLClient",
    "DagsterJobNotFoundError",
    "DagsterProxyError",
    "DagsterProxyOperator",
    "DagsterRequestError",
    "DagsterRunFailedError",
    "DagsterRunProxy",
    "DagsterUnreachableError",
    "ProxiedState",
    "ProxiedStateError",
    "ProxyTask",
    "TaskProxiedState",
    "load_proxied_state_from_yaml",
    "proxy_job_name",
    "proxying_to_dagster",
]

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "DagsterDeadlineError",
            "DagsterGraphQLClient",
            "DagsterJobNotFoundError",
            "DagsterProxyError",
            "DagsterRequestError",
            "DagsterRunFailedError",
            "DagsterRunProxy",
            "DagsterUnreachableError",
            "ProxyTask",
        ),
        ".client",
    ),
    "proxy_job_name": ".naming",
    "DagsterProxyOperator": ".operator",
    **dict.fromkeys(
        (
            "DagProxiedState",
            "ProxiedState",
            "ProxiedStateError",
            "TaskProxiedState",
            "load_proxied_state_from_yaml",
        ),
        ".proxied_state",
    ),
    "proxying_to_dagster": ".proxying",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
