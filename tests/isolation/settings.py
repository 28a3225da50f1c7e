"""Test settings for process-isolation workers: the test suite's, with tests.isolation.jobs allowed."""

from tests.settings import *  # noqa: F403
from tests.settings import PGQUEUE

PGQUEUE = {**PGQUEUE, "ALLOWED_TASKS": ["tests.isolation.jobs.*"]}
