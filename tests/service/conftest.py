"""Fixtures of the job-service tests."""
from tests.service.pg import postgres_db, postgres_url  # noqa: F401  (a throwaway PostgreSQL cluster)
