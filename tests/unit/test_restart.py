"""The restartable reader of ``sizeaware.store.restart``, over a fake
backend.

:class:`FakeBackend` plays an HTTP object store: it answers a ``Want`` as
a server would (200 for a plain GET, 206 with ``Content-Range`` for a
range, 412 when ``If-Match`` differs from the current ETag) and breaks the
bodies it hands out at chosen offsets of the object, in the ways a real
connection breaks: a reset, a timeout, a body that ends early. Everything
the reader asked for is recorded, so tests check both what the consumer
got and what the backend was asked.
"""

import hashlib
import os
import socket

from glance_store import exceptions as store_exceptions
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from sizeaware import exceptions
from sizeaware import resume
from sizeaware.store import restart

DATA = os.urandom(300_001)
N = len(DATA)


class Body:
    """A response body that breaks after ``limit`` bytes: ``how`` is
    ``'reset'`` (ConnectionResetError), ``'timeout'`` (socket timeout) or
    ``'short'`` (a clean end)."""

    def __init__(self, data, limit=None, how='reset', piece=None):
        self.data = data
        self.offset = 0
        self.limit = len(data) if limit is None else limit
        self.how = how
        self.piece = piece
        self.closed = False

    def read(self, n):
        assert not self.closed, 'read after close'
        if self.offset >= self.limit:
            if self.limit < len(self.data):
                if self.how == 'reset':
                    raise ConnectionResetError(104, 'Connection reset')
                if self.how == 'timeout':
                    raise socket.timeout('timed out')
            return b''
        n = min(n, self.limit - self.offset, self.piece or n)
        data = self.data[self.offset:self.offset + n]
        self.offset += n
        return data

    def close(self):
        self.closed = True


class FakeBackend:
    """See the module docstring.

    :param cuts: object offsets (ascending) at which the current body
        breaks, each once, the way ``how`` says.
    """

    def __init__(self, data=DATA, etag='"v1"', cuts=(), how='reset',
                 piece=None):
        self.data = data
        self.etag = etag
        self.cuts = list(cuts)
        self.how = how
        self.piece = piece
        self.wants = []
        self.bodies = []
        #: Answers to send instead of the next ones (Part or exception).
        self.script = []

    def replace(self, data, etag):
        self.data, self.etag = data, etag

    def __call__(self, want):
        self.wants.append(want)
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                return answer
        if want.etag is not None and want.etag != self.etag:
            return restart.Part(412, etag=self.etag)
        start = want.start
        stop = len(self.data) if want.stop is None else min(want.stop,
                                                             len(self.data))
        cut = next((c for c in self.cuts if start <= c < stop), None)
        if cut is not None:
            self.cuts.remove(cut)
        body = Body(self.data[start:stop],
                    None if cut is None else cut - start, self.how,
                    self.piece)
        self.bodies.append(body)
        if want.range is None:
            return restart.Part(200, body, self.etag, None, len(self.data),
                                body.close)
        return restart.Part(
            206, body, self.etag,
            'bytes %d-%d/%d' % (start, stop - 1, len(self.data)),
            stop - start, body.close)

    def all_closed(self):
        return all(b.closed for b in self.bodies)


def policy(retries=20):
    return restart.Policy(read_retries=retries, retry_backoff=0.5)


def reader(backend, start=0, length=None, retries=20, sleeps=None):
    return restart.RestartingReader(
        backend, start, length, policy=policy(retries), name='image',
        sleep=(sleeps.append if sleeps is not None else lambda s: None))


def drain(stream, size=65536):
    return b''.join(restart.chunks(stream, size))


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, N - 1), max_size=6, unique=True),
       how=st.sampled_from(['reset', 'timeout', 'short']),
       size=st.sampled_from([1000, 4096, 65536, 100_003]),
       piece=st.sampled_from([None, 777, 65536]))
def test_whole_read_survives_cuts_anywhere(cuts, how, size, piece):
    backend = FakeBackend(cuts=sorted(cuts), how=how, piece=piece)
    stream = reader(backend)
    assert stream.expected == N
    assert drain(stream, size) == DATA
    # The first request is a plain GET; each restart asks for exactly the
    # rest, pinned to the first ETag, and nothing is asked for twice.
    assert backend.wants[0] == restart.Want(0, None, None, whole=True)
    positions = [w.start for w in backend.wants[1:]]
    assert positions == sorted(cuts)
    assert all(w.etag == '"v1"' and w.stop == N and
               w.range == 'bytes=%d-%d' % (w.start, N - 1)
               for w in backend.wants[1:])
    assert stream.restarts == len(backend.wants) - 1 == stream.requests - 1
    assert backend.all_closed()


@settings(max_examples=60, deadline=None)
@given(bounds=st.tuples(st.integers(0, N - 1), st.integers(1, N)),
       cuts=st.lists(st.integers(0, N - 1), max_size=4, unique=True))
def test_ranged_read_is_exact_with_cuts(bounds, cuts):
    start, length = bounds[0], min(bounds[1], N - bounds[0])
    backend = FakeBackend(cuts=sorted(cuts))
    stream = reader(backend, start, length)
    assert stream.expected == length
    assert drain(stream, 5000) == DATA[start:start + length]
    assert backend.wants[0] == restart.Want(start, start + length, None)
    assert backend.wants[0].range == 'bytes=%d-%d' % (start,
                                                       start + length - 1)
    assert all(w.stop == start + length for w in backend.wants)
    assert backend.all_closed()


def test_suffix_read_learns_its_end_from_the_first_answer():
    backend = FakeBackend(cuts=[N - 10])
    stream = reader(backend, N - 100)
    assert backend.wants[0].range == 'bytes=%d-' % (N - 100)
    assert stream.expected == 100
    assert drain(stream) == DATA[-100:]
    assert backend.wants[1].range == 'bytes=%d-%d' % (N - 10, N - 1)


def test_zero_length_read_sends_nothing():
    backend = FakeBackend()
    assert drain(reader(backend, 10, 0)) == b''
    assert backend.wants == []


def test_retries_spent_raise_and_keep_raising():
    backend = FakeBackend(cuts=[1000])
    backend.script = [None] + [ConnectionRefusedError(111, 'refused')] * 3
    stream = reader(backend, retries=3)
    got = bytearray()
    with pytest.raises(exceptions.BackendReadFailed, match='after 3'):
        for piece in restart.chunks(stream, 500):
            got += piece
    assert bytes(got) == DATA[:1000]
    assert len(backend.wants) == 4
    with pytest.raises(exceptions.BackendReadFailed):
        stream.read(1)
    assert backend.all_closed()


def test_breaks_with_progress_between_them_never_spend_the_retries():
    """Six breaks, each after bytes arrived, on a read allowed five
    retries: the budget is of failures in a row, and each restart that
    delivers bytes makes it whole again."""
    cuts = [N // 7 * i for i in range(1, 7)]
    backend = FakeBackend(cuts=cuts)
    stream = reader(backend, retries=5)
    assert drain(stream, 4096) == DATA
    assert [w.start for w in backend.wants[1:]] == cuts
    assert stream.restarts == 6
    assert backend.all_closed()


@pytest.mark.parametrize('how', ['reset', 'short', 'timeout'])
def test_restarts_that_deliver_nothing_are_failures_in_a_row(how):
    # Each cut at 1000 fires once: the first body breaks there, then each
    # restart from 1000 breaks before its first byte.
    backend = FakeBackend(cuts=[1000] * 4, how=how)
    with pytest.raises(exceptions.BackendReadFailed, match='after 3'):
        drain(reader(backend, retries=3))
    assert len(backend.wants) == 4
    # Three in a row, a byte, three in a row again: within the budget.
    backend = FakeBackend(cuts=[1000] * 3 + [1001] * 3, how=how)
    assert drain(reader(backend, retries=3)) == DATA
    assert len(backend.wants) == 7


def test_zero_retries_fail_at_the_first_break():
    backend = FakeBackend(cuts=[5], how='short')
    stream = reader(backend, retries=0)
    with pytest.raises(exceptions.BackendReadFailed):
        drain(stream)
    assert len(backend.wants) == 1


def test_backoff_doubles_in_a_row_and_resets_after_progress():
    backend = FakeBackend(cuts=[1000, 2000])
    backend.script = [None, ConnectionRefusedError(111, 'refused'),
                      restart.Part(503), None, None]
    sleeps = []
    assert drain(reader(backend, sleeps=sleeps)) == DATA
    # cut at 1000: 0.5; refused: 1.0; 503: 2.0; then progress, cut at
    # 2000: 0.5 again; each wait drawn between half and all of it.
    assert len(sleeps) == 4
    for slept, longest in zip(sleeps, [0.5, 1.0, 2.0, 0.5]):
        assert longest / 2 <= slept <= longest


def test_replaced_object_is_detected_not_spliced():
    backend = FakeBackend(cuts=[N // 2])
    stream = reader(backend)
    got = stream.read(N // 4)
    backend.replace(bytes(N), '"v2"')
    with pytest.raises(exceptions.BackendObjectChanged, match='412'):
        got += drain(stream)
    assert backend.wants[-1].etag == '"v1"'
    assert backend.all_closed()


@pytest.mark.parametrize('answer, error', [
    (restart.Part(200, etag='"v1"', content_length=N),
     exceptions.BackendRangeMismatch),
    (restart.Part(206, etag='"v1"', content_range='bytes 0-%d/%d'
                  % (N - 1, N)), exceptions.BackendRangeMismatch),
    (restart.Part(206, etag='"v1"', content_range='bytes 1000-%d/%d'
                  % (N, N + 1)), exceptions.BackendRangeMismatch),
    (restart.Part(206, etag='"v1"', content_range='bytes 1000-%d/%d'
                  % (N - 2, N)), exceptions.BackendRangeMismatch),
    (restart.Part(206, etag='"v1"', content_range=None),
     exceptions.BackendRangeMismatch),
    (restart.Part(206, etag='"v2"', content_range='bytes 1000-%d/%d'
                  % (N - 1, N)), exceptions.BackendObjectChanged),
    (restart.Part(206, etag=None, content_range='bytes 1000-%d/%d'
                  % (N - 1, N)), exceptions.BackendObjectChanged),
    (restart.Part(416), exceptions.BackendRangeMismatch),
])
def test_a_restart_answer_that_is_not_the_rest_is_refused(answer, error):
    closed = []
    answer.close = lambda: closed.append(True)
    backend = FakeBackend(cuts=[1000])
    backend.script = [None, answer]
    stream = reader(backend)
    got = stream.read(1000)
    with pytest.raises(error):
        got += drain(stream)
    assert got == DATA[:1000]
    assert closed == [True]
    assert backend.all_closed()


def test_no_strong_etag_means_no_restart():
    backend = FakeBackend(etag='W/"weak"', cuts=[10])
    with pytest.raises(exceptions.BackendReadFailed, match='ETag'):
        drain(reader(backend))
    assert len(backend.wants) == 1


def test_a_body_longer_than_asked_is_refused():
    backend = FakeBackend()
    backend.script = [restart.Part(206, Body(DATA[:200]), '"v1"',
                                   'bytes 0-99/%d' % N, 100)]

    class Greedy(Body):
        def read(self, n):
            return super().read(n + 1)

    backend.script[0].body = Greedy(DATA[:200])
    stream = reader(backend, 0, 100)
    with pytest.raises(exceptions.BackendRangeMismatch, match='more'):
        drain(stream)


def test_first_request_errors_reach_the_caller_unchanged():
    class NotFound(Exception):
        pass

    backend = FakeBackend()
    backend.script = [NotFound('gone')]
    with pytest.raises(NotFound):
        reader(backend)


def test_a_drivers_error_on_a_restart_is_kept_and_raised_again():
    class NotFound(Exception):
        pass

    backend = FakeBackend(cuts=[1000])
    backend.script = [None, NotFound('gone')]
    stream = reader(backend)
    assert stream.read(1000) == DATA[:1000]
    with pytest.raises(NotFound):
        stream.read(1)
    with pytest.raises(NotFound):
        stream.read(1)
    assert len(backend.wants) == 2
    assert backend.all_closed()


def test_first_request_is_retried_when_the_connection_fails():
    backend = FakeBackend()
    backend.script = [ConnectionRefusedError(111, 'refused'),
                      restart.Part(502)]
    stream = reader(backend)
    assert drain(stream) == DATA
    assert stream.restarts == 2


def test_consumer_stopping_early_closes_the_answer():
    backend = FakeBackend()
    pieces = restart.chunks(reader(backend), 1000)
    next(pieces)
    pieces.close()
    assert backend.all_closed()


def test_indexable_is_what_glance_store_returns():
    backend = FakeBackend(cuts=[70_000])
    data = restart.indexable(reader(backend, 5, 100_000), 4096)
    assert data.size == 100_000
    assert hashlib.sha256(b''.join(data)).digest() == hashlib.sha256(
        DATA[5:100_005]).digest()


def test_policy_from_conf_and_backoff_cap():
    class Conf:
        read_retries, retry_backoff = 2, 4.0
        connect_timeout, read_timeout, stall_timeout = 1.0, 2.0, 3.0

    p = restart.Policy.from_conf(Conf)
    assert p == restart.Policy(2, 4.0, 1.0, 2.0, 3.0)
    backoff = p.backoff(give_up=lambda failures, reason: None)
    assert (backoff.attempts, backoff.base, backoff.cap) == (
        2, 4.0, restart.MAX_BACKOFF)
    assert [resume.delay(p.retry_backoff, i, restart.MAX_BACKOFF)
            for i in range(5)] == [0.0, 4.0, 8.0, 16.0, 30.0]


@pytest.mark.parametrize('answer', [
    ConnectionRefusedError(111, 'refused'), restart.Part(503),
    restart.Part(429), socket.timeout('timed out')])
def test_a_first_request_never_answered_is_glances_503(answer):
    """Retries spent on the first request: glance_store's
    ``RemoteServiceUnavailable``, which Glance answers with 503."""
    backend = FakeBackend()
    backend.script = [answer] * 3
    with pytest.raises(store_exceptions.RemoteServiceUnavailable,
                       match='after 2 retries'):
        restart.open_reader(restart.RestartingReader, backend,
                            policy=policy(2), sleep=lambda s: None)
    assert len(backend.wants) == 3


def test_open_reader_leaves_other_errors_alone():
    backend = FakeBackend()
    backend.script = [store_exceptions.NotFound('gone')]
    with pytest.raises(store_exceptions.NotFound):
        restart.open_reader(restart.RestartingReader, backend,
                            policy=policy())
    backend.script = [restart.Part(416)]
    with pytest.raises(exceptions.BackendRangeMismatch):
        restart.open_reader(restart.RestartingReader, backend, 10, 5,
                            policy=policy())
    stream = restart.open_reader(restart.RestartingReader, backend, 10, 5,
                                 policy=policy())
    assert drain(stream) == DATA[10:15]
