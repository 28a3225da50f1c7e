"""Settings of worker processes in the contract suite: the queue database comes from the environment.

PGQUEUE_CONTRACT_DATABASE names the alias ('default' or 'sqlite'); PGDATABASE and
PGQUEUE_SQLITE point the aliases at the test databases.
"""

import os

from tests.settings import *  # noqa: F403

PGQUEUE = {**PGQUEUE, "DATABASE": os.environ.get("PGQUEUE_CONTRACT_DATABASE", "sqlite")}  # noqa: F405
