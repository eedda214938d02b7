"""Integration fixtures: ``packaged_model`` lives in tests/conftest.py (shared with the contract suites)."""
