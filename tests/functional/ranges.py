"""Ranged downloads through Glance: the cases every store is read with.

A store that declares random access gets from Glance the offset and the
length of a ``Range``; these cases reach its first and last byte, a span
across the store's own read size, a suffix and an open end, the whole
image as a range, and a range that starts past the end.
"""

import hashlib


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
