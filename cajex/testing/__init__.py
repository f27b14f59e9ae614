"""Test support: the session's PostgreSQL and Redis, a template database with
the schema, and factories that build workspaces through the real functions."""
