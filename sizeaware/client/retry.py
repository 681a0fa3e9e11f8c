"""Bounded retries with exponential backoff, shared by both transfers:
:class:`sizeaware.resume.Backoff`, giving up with the client's
:class:`~sizeaware.client.errors.TransferError`."""

import time

from sizeaware import resume
from sizeaware.client import errors


def _give_up(failures, reason):
    return errors.TransferError(
        'giving up after %d failed attempts in a row; last: %s'
        % (failures, reason))


class Backoff(resume.Backoff):
    """Failures in a row, reset by progress (see
    :class:`sizeaware.resume.Backoff`), for the client's transfers.

    :param attempts: failures in a row after which :meth:`failed` raises.
    :param base: the first wait, in seconds; each failure doubles it.
    :param cap: the longest wait.
    """

    def __init__(self, attempts=8, base=0.5, cap=10.0, sleep=time.sleep):
        super().__init__(attempts, base, cap, give_up=_give_up, sleep=sleep)


def call(backoff, function, transient):
    """``function()``, tried again after each of the ``transient``
    exceptions, with ``backoff``'s waits and limit."""
    while True:
        try:
            return function()
        except transient as exc:
            backoff.failed(exc)
