"""Settings that load in the worker but fail in its child processes, as a misconfiguration would."""

import multiprocessing

from tests.isolation.settings import *  # noqa: F403

if multiprocessing.parent_process() is not None:
    raise RuntimeError("these settings refuse to load in a child process")
