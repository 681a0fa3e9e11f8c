"""Bounded retries with exponential backoff, shared by both transfers."""

import random
import time

from sizeaware.client import errors


class Backoff:
    """Counts consecutive failures; progress between two failures resets
    the count, so a long transfer on a flaky link is not given up while it
    still advances.

    :param attempts: failures in a row after which :meth:`failed` raises.
    :param base: the first wait, in seconds; each failure doubles it.
    :param cap: the longest wait.
    """

    def __init__(self, attempts=8, base=0.5, cap=10.0, sleep=time.sleep):
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self.failures = 0
        self._sleep = sleep

    def progressed(self):
        self.failures = 0

    def failed(self, reason):
        """Wait before the next try, or raise when tries are spent."""
        self.failures += 1
        if self.failures > self.attempts:
            raise errors.TransferError(
                'giving up after %d failed attempts in a row; last: %s'
                % (self.attempts, reason))
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        self._sleep(delay * (0.5 + random.random() / 2))


def call(backoff, function, transient):
    """``function()``, tried again after each of the ``transient``
    exceptions, with ``backoff``'s waits and limit."""
    while True:
        try:
            return function()
        except transient as exc:
            backoff.failed(exc)
