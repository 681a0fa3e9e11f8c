"""Ranged downloads through Glance: the cases every store is read with.

A store that declares random access gets from Glance the offset and the
length of a ``Range``; these cases reach its first and last byte, a span
across the store's own read size, a suffix and an open end, the whole
image as a range, and a range that starts past the end.
"""

import hashlib
import http.client
import os

from sizeaware.client import connection
from tests.functional import client


def satisfiable(size, piece):
    """``{case: (Range header, first byte, end)}`` for an image of ``size``
    bytes read by the store in pieces of ``piece`` bytes (the end is
    exclusive)."""
    assert size > 2 * piece + 5
    return {
        'first_byte': ('bytes=0-0', 0, 1),
        'last_byte': ('bytes=%d-%d' % (size - 1, size - 1), size - 1, size),
        'middle': ('bytes=%d-%d' % (piece - 3, 2 * piece + 4),
                   piece - 3, 2 * piece + 5),
        'suffix': ('bytes=-1000', size - 1000, size),
        'open_end': ('bytes=%d-' % (size - piece - 7), size - piece - 7,
                     size),
        'whole': ('bytes=0-', 0, size),
    }


def unsatisfiable(size):
    """``{case: Range header}`` Glance answers 416."""
    return {'start_at_size': 'bytes=%d-' % size,
            'start_past_size': 'bytes=%d-%d' % (size + 10, size + 20)}


def download_range(api, image_id, header):
    return api.request('GET', '/v2/images/%s/file' % image_id,
                       headers={'Range': header})


def assert_range(resp, data, start, end):
    """A 206 carrying exactly ``data[start:end]``."""
    assert resp.status == 206, resp
    assert resp.headers['content-range'] == 'bytes %d-%d/%d' % (
        start, end - 1, len(data))
    assert int(resp.headers['content-length']) == end - start
    assert digest(resp.body) == digest(data[start:end])


def assert_whole(resp, data):
    """A 200 carrying exactly ``data``."""
    assert resp.status == 200, resp
    assert digest(resp.body) == digest(data)


def digest(data):
    """Length and sha256: compared instead of the bytes, so a failure
    prints two lines instead of megabytes."""
    return len(data), hashlib.sha256(data).hexdigest()


class Streamed:
    """What a client got from ``GET .../file``, read piece by piece:
    ``status``, ``headers`` (names lower-cased), ``received`` bytes, their
    ``sha256``, and ``error``, the exception that ended the body early (a
    reset, or ``http.client.IncompleteRead`` for a body shorter than its
    ``Content-Length``), or None.

    :param pause_after: after this many bytes, call ``on_pause()`` before
        reading on (the client stops reading meanwhile).
    :param keep: keep the bytes in ``body``.
    """

    def __init__(self, api, image_id, headers=None, *, pause_after=None,
                 on_pause=None, keep=False, piece=1024 * 1024):
        sha = hashlib.sha256()
        self.received = 0
        self.error = None
        self.body = bytearray() if keep else None
        with api.streaming('GET', '/v2/images/%s/file' % image_id,
                           headers=headers) as resp:
            self.status = resp.status_code
            self.headers = {k.lower(): v for k, v in resp.headers.items()}
            try:
                while True:
                    want = piece
                    if pause_after is not None:
                        want = min(want, pause_after - self.received)
                    data = resp.raw.read(want, decode_content=False)
                    if not data:
                        break
                    sha.update(data)
                    self.received += len(data)
                    if keep:
                        self.body += data
                    if self.received == pause_after:
                        on_pause()
                        pause_after = None
            except connection.CONNECTION_ERRORS as exc:
                self.error = client.broken_by(exc)
        self.sha256 = sha.hexdigest()
        length = self.headers.get('content-length')
        if self.error is None and length is not None and (
                self.received < int(length)):
            # A body that ends before its Content-Length, as curl says
            # "transfer closed with N bytes remaining" (exit 18).
            self.error = http.client.IncompleteRead(
                b'', int(length) - self.received)


# -- restarts -----------------------------------------------------------------
#
# The stores' read options and the image of the tests that break a store's
# answers to Glance (tests/functional/faultproxy.py) and expect the driver
# to restart its read.

MIB = 1024 * 1024
#: The size of the image the restart tests download.
BIG = 256 * MIB
#: ``read_retries`` of the drivers under test.
RETRIES = 10
#: ``stall_timeout`` of the drivers under test, in seconds.
STALL_TIMEOUT = 2
READ_OPTIONS = {
    'read_retries': RETRIES,
    'retry_backoff': 0.002,
    'connect_timeout': 5,
    'read_timeout': 10,
    'stall_timeout': STALL_TIMEOUT,
}


def random_bytes(size):
    """``size`` bytes (a multiple of 1 MiB) that differ in every MiB: one
    random block with a counter in front, quicker than ``os.urandom``."""
    block = os.urandom(MIB - 8)
    return b''.join(i.to_bytes(8, 'big') + block for i in range(size // MIB))


def spread(count, size=BIG):
    """``count`` offsets spread over the middle of the image."""
    return [size // 10 + i * (size * 8 // 10) // max(count, 1)
            for i in range(count)]


#: ``(fault, count)``: the ways a download's store reads are broken.
FAULTS = [('cut', 1), ('cut', 3), ('cut', 10), ('truncate', 3), ('stall', 1)]


def break_replies(proxy, fault, count, size=BIG):
    """Make ``proxy`` (a :class:`faultproxy.FaultProxy`) break its replies
    ``count`` times by ``fault`` (``cut``, ``truncate``, ``stall``: one
    stall, longer than :data:`STALL_TIMEOUT`)."""
    offsets = spread(count, size)
    if fault == 'stall':
        proxy.stall_reply_at(offsets[0], STALL_TIMEOUT + 2)
    else:
        getattr(proxy, '%s_reply_at' % fault)(*offsets)


def assert_streamed_whole(got, size, sha256):
    """A :class:`Streamed` 200 that carried all ``size`` bytes, unbroken,
    with that ``sha256``."""
    assert got.error is None, got.error
    assert got.status == 200
    assert int(got.headers['content-length']) == size
    assert (got.received, got.sha256) == (size, sha256)
