"""Benchmark harness: airpeer vs dagster-airlift against a real Airflow (`make bench`).

Run ``python -m benchmarks --help``. The orchestrator (:mod:`benchmarks.run`) runs in the project's ``.venv``;
each library is driven by an adapter process in its own virtual environment (``adapter_airpeer.py`` in
``.venv``, ``adapter_airlift.py`` in ``.venvs/airlift``) speaking JSON lines, and the seeding script
(``seed_airflow.py``) runs in the interpreter of the Airflow under test.
"""
