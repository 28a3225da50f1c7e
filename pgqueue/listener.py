"""The LISTEN side: one dedicated autocommit connection that wakes the worker on NOTIFY.

NOTIFY only makes workers fast; polling keeps them correct. So the listener wakes
the worker whenever it cannot be sure it saw everything: after every (re)connect,
and when its connection turns out to be dead. A connection that stops answering
without an error (a stalled proxy, a half-open TCP link) is found by a periodic
ping with a deadline, and replaced.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgqueue.backoff import Backoff
from pgqueue.drivers.postgresql import NOTIFY_CHANNEL
from pgqueue.queues import selector_matches

logger = logging.getLogger("pgqueue.listener")

#: Seconds the listener may take to notice stop().
STOP_LATENCY = 0.2


def _shutdown_socket(fd: int) -> None:
    """Break a connection that hangs, from another thread: its blocked read then fails."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class Listener(threading.Thread):
    """Calls ``wake()`` when a job arrives in a queue the selectors match."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        selectors: list[str],
        wake: Callable[[], None],
        *,
        ping_interval: float,
        ping_timeout: float,
    ):
        super().__init__(name="pgqueue-listener", daemon=True)
        self._connect_kwargs = connect_kwargs
        self._selectors = selectors
        self._wake = wake
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._stop_event = threading.Event()
        self.connected = threading.Event()
        self.reconnects = 0

    def stop(self) -> None:
        self._stop_event.set()

    def _matches(self, queue_name: str) -> bool:
        return any(selector_matches(s, queue_name) for s in self._selectors)

    def run(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        first = True
        while not self._stop_event.is_set():
            try:
                with psycopg.connect(
                    **self._connect_kwargs, autocommit=True, connect_timeout=10
                ) as conn:
                    self._execute_with_deadline(conn, f"LISTEN {NOTIFY_CHANNEL}")
                    if not first:
                        self.reconnects += 1
                        logger.warning("listener reconnected; polling for anything missed")
                    first = False
                    backoff.reset()
                    self.connected.set()
                    self._wake()
                    self._listen(conn)
            except psycopg.Error as exc:
                # Even a first attempt that failed makes the next success a reconnection.
                first = False
                self.connected.clear()
                if self._stop_event.is_set():
                    break
                delay = backoff.next_delay()
                logger.warning("listener connection lost (%s); reconnecting in %.2fs", exc, delay)
                self._wake()
                self._stop_event.wait(delay)
        self.connected.clear()

    def _listen(self, conn: psycopg.Connection) -> None:
        # Waits in short slices, so that stop() takes effect within STOP_LATENCY instead of a
        # whole ping interval (a stopping worker joins this thread).
        next_ping = time.monotonic() + self._ping_interval
        while not self._stop_event.is_set():
            wait = min(STOP_LATENCY, max(next_ping - time.monotonic(), 0.0))
            for notify in conn.notifies(timeout=wait):
                if self._matches(notify.payload):
                    self._wake()
            if self._stop_event.is_set():
                return
            if time.monotonic() >= next_ping:
                self._execute_with_deadline(conn, "SELECT 1")
                next_ping = time.monotonic() + self._ping_interval

    def _execute_with_deadline(self, conn: psycopg.Connection, statement: str) -> None:
        """Run a statement, breaking the connection if no answer comes within the ping timeout."""
        timer = threading.Timer(self._ping_timeout, _shutdown_socket, (conn.fileno(),))
        timer.daemon = True
        timer.start()
        try:
            conn.execute(statement)
        finally:
            timer.cancel()
