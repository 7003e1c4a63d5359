"""Alembic migrations of the feedback database (run by ``database.migrate``; no alembic.ini)."""
