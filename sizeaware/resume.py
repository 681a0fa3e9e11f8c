"""ETag-pinned ranged resume: the rules a read broken mid-way follows,
shared by the store drivers' restarting reads
(:mod:`sizeaware.store.restart`) and the transfer client's downloads
(:mod:`sizeaware.client.download`).

What to ask for
    :class:`Want`: the rest of the range, from the exact byte the read
    stopped at (``Range: bytes=a-b``), pinned with ``If-Match`` to the
    strong ETag of the first answer (:func:`strong`); the first request of
    a whole read is a plain GET.

What may be spliced on
    :func:`check`: to a ranged request, only a 206 whose ``Content-Range``
    is exactly the range asked for, of the same total, with the same
    ETag; to a whole request, only a 200 of the known length. A 412 (the
    pinned ETag no longer matches) and another ETag mean the object
    changed; a 200 to a ranged request, another range or another total
    are never spliced. The caller's own errors are raised
    (:class:`Errors`), so each side keeps its domain.

What is retried
    :data:`RETRYABLE_STATUSES` (408, 429, 500, 502, 503, 504), and a
    connection that breaks, times out or ends before the range does
    (each caller names its HTTP library's exceptions). Nothing else: a
    412 is the object changing, a 501 or a 4xx a refusal.

How long
    :class:`Backoff`: a budget of failures in a row. A retry that
    delivers bytes resets it, so a long read on a link that breaks now
    and then goes on as long as it advances, and one that stops
    advancing gives up after the budget. Waits double from a base to a
    cap, each drawn between half and all of its value, so that readers
    broken together do not come back together.
"""

import dataclasses
import random
import time
import typing

from webob import byterange

#: Answers after which the same request may succeed.
RETRYABLE_STATUSES = frozenset((408, 429, 500, 502, 503, 504))


def retryable(status: int) -> bool:
    """Whether an answer of ``status`` is worth asking again."""
    return status in RETRYABLE_STATUSES


def strong(etag: typing.Optional[str]) -> typing.Optional[str]:
    """``etag`` if it is a strong entity tag, else None (a weak one, or
    none, cannot pin a range: RFC 9110 section 13.1.1)."""
    if not etag or etag.startswith('W/'):
        return None
    return etag


@dataclasses.dataclass(frozen=True)
class Want:
    """One request of a read: bytes ``[start, stop)`` (``stop`` None: to
    the end of the object), pinned to ``etag`` when not None; ``whole``
    for a plain GET of the whole object."""

    start: int
    stop: typing.Optional[int]
    etag: typing.Optional[str] = None
    whole: bool = False

    @property
    def range(self) -> typing.Optional[str]:
        """The ``Range`` header's value, or None for a whole request."""
        if self.whole:
            return None
        if self.stop is None:
            return 'bytes=%d-' % self.start
        return 'bytes=%d-%d' % (self.start, self.stop - 1)

    def headers(self) -> dict:
        """``Range`` and ``If-Match``, as far as they are wanted."""
        headers = {}
        if self.range is not None:
            headers['Range'] = self.range
        if self.etag is not None:
            headers['If-Match'] = self.etag
        return headers


@dataclasses.dataclass
class Part:
    """One answer to a :class:`Want`: its status and the headers' values
    (or None), ``body`` (anything with ``read(n)``) and ``close``
    (releases the connection)."""

    status: int
    body: typing.Any = None
    etag: typing.Optional[str] = None
    content_range: typing.Optional[str] = None
    content_length: typing.Optional[int] = None
    close: typing.Callable[[], None] = lambda: None


@dataclasses.dataclass(frozen=True)
class Errors:
    """The errors :func:`check` raises, the caller's own.

    :param changed: the object is no longer the one pinned (412, another
        ETag).
    :param mismatch: the answer is not the range asked for.
    :param ignored: a 200 to a ranged request (default ``mismatch``).
    :param noun: how messages name the object.
    """

    changed: type
    mismatch: type
    ignored: typing.Optional[type] = None
    noun: str = 'the object'


def check(want: Want, answer: Part, total: typing.Optional[int],
          errors: Errors, name: str = 'object') -> typing.Optional[int]:
    """Raise unless ``answer`` is exactly what ``want`` asked for; return
    the object's total size as the answer gives it.

    :param total: the object's size when known (it must not change), else
        None.
    :param name: how messages name the read.
    """
    what = '%s (%s)' % (name, want.range or 'whole')
    status = answer.status
    if status == 412:
        raise errors.changed(
            '%s: %s changed since the read began (412 to If-Match %s)'
            % (what, errors.noun, want.etag))
    if status not in (200, 206):
        raise errors.mismatch('%s: answered %d' % (what, status))
    if want.etag is not None and answer.etag != want.etag:
        raise errors.changed(
            '%s: %s changed since the read began (ETag %s, was %s)'
            % (what, errors.noun, answer.etag, want.etag))
    if want.range is None:
        if status != 200:
            raise errors.mismatch('%s: answered %d, not 200' % (what,
                                                                 status))
        length = answer.content_length
        if total is not None and length is not None and length != total:
            raise errors.mismatch('%s: %d bytes, not %d' % (what, length,
                                                              total))
        return length if total is None else total
    if status != 206:
        raise (errors.ignored or errors.mismatch)(
            '%s: answered %d (the whole object) to a ranged request: not '
            'spliced' % (what, status))
    got = byterange.ContentRange.parse(answer.content_range)
    stop = want.stop
    if stop is None and got is not None:
        stop = got.length
    if (got is None or got.start != want.start or got.stop != stop
            or got.length is None or total not in (None, got.length)):
        raise errors.mismatch('%s: answered Content-Range %r'
                              % (what, answer.content_range))
    return got.length


def delay(base: float, failures: int, cap: float) -> float:
    """The longest wait after ``failures`` failures in a row: ``base``
    doubled at each failure after the first, at most ``cap``."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** (failures - 1))


class Backoff:
    """A retry budget of failures in a row, reset by progress, and the
    waits between tries.

    :param attempts: failures in a row that are retried; the one after
        them raises ``give_up(failures, reason)``.
    :param base: the first wait, in seconds; each failure in a row doubles
        it, up to ``cap``. Each wait is drawn between half and all of it.
    :param sleep: ``time.sleep``, replaceable by tests.
    """

    def __init__(self, attempts: int, base: float, cap: float, *,
                 give_up: typing.Callable[[int, object], BaseException],
                 sleep=time.sleep):
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self.give_up = give_up
        #: Failures since the last progress.
        self.failures = 0
        self._sleep = sleep

    def progressed(self) -> None:
        """Bytes arrived since the last failure: the budget is whole
        again."""
        self.failures = 0

    def failed(self, reason) -> None:
        """Count a failure; wait before the next try, or raise when the
        budget is spent."""
        self.failures += 1
        if self.failures > self.attempts:
            raise self.give_up(self.failures - 1, reason)
        wait = delay(self.base, self.failures, self.cap)
        self._sleep(wait * (0.5 + random.random() / 2))
