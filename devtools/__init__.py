"""Development tools for airpeer: launching real Airflow instances for tests, demos and benchmarks."""
