"""Pytest plugins and helpers shared by the whole test suite (registered in tests/conftest.py)."""
