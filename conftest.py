"""Shared fixtures live in tests/fixtures.py."""

pytest_plugins = ["tests.fixtures"]
