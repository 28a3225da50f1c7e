"""Writes a marker file when imported: no job may make the worker import it."""

from pathlib import Path

Path("/tmp/pgqueue-evil-module-imported").write_text("imported")


def run():
    return "ran"
