"""Reliability tooling for airpeer: fault-injecting transports, an in-memory Airflow, the event ledger and the soak.

* `fake_airflow`: an in-memory Airflow 3 (REST v2) or 2 (REST v1) with exactly the endpoints the sensor uses,
  for the faults a real server cannot produce on demand (malformed answers, revoked tokens, ...).
* `faults`: httpx transports that wrap another transport (the network or the fake) and inject faults:
  HTTP statuses, connection resets, timeouts, answers cut mid-JSON, clock skew, and hooks that run between
  two pages (to kill a real api-server there).
* `ledger`: what Dagster recorded, read back from a Dagster instance, compared with what Airflow completed.
* `ticker`: evaluates the sensor and stores its results the way the sensor daemon does, crashes included.
* `soak`: the long run behind `make soak`.
"""
