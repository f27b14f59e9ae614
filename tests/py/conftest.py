"""Fixtures live in cajex.testing.plugin (enabled in pyproject.toml)."""
