"""The test dg project's package."""
