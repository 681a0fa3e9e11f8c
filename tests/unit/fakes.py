"""A stand-in for Glance, and a WSGI server's part, for unit tests.

:class:`FakeGlance` reads the body as Glance does and records every call;
its ``app_iter`` tracks being closed. :func:`serve` plays the server:
it calls the filter, drains and closes what it returns. The ``glance``
fixture (``conftest.py``) checks in teardown that every ``app_iter`` was
closed and that no body was left half-read without a verdict.
"""

import dataclasses
import hashlib
import io
import json

import webob
from webob import byterange

#: Keys of an image of :class:`FakeGlance` that describe its data, not its
#: record.
_DATA_KEYS = ('data', 'served', 'ranged', 'piece')


@dataclasses.dataclass
class Call:
    """One request as the application saw it."""

    environ: dict
    body: bytes = b''
    #: The exception reading raised, if any.
    error: BaseException = None
    #: Whether reading went on to the end of the body (a ``b''``).
    finished: bool = False


class LeakTrackingIter:
    """An ``app_iter`` that records whether the server closed it."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.closed = False

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed = True


class FakeGlance:
    """Reads ``request.body_file`` as Glance does and answers ``status``.

    :param read_size: the size of each read, or ``'line'`` (readline),
        ``'iter'`` (iteration), ``'all'`` (one ``read()``), ``'into'``
        (``readinto`` a 4099-byte buffer), or None to read nothing.
    :param on_error: when reading raises: ``'raise'`` lets the exception
        out, ``'500'`` answers 500, ``'swallow'`` answers ``status`` as if
        nothing happened, ``'wrap'`` raises a ``RuntimeError`` from it,
        ``'unrelated'`` raises a ``RuntimeError`` while handling it (the
        database failing as the image is restored).
    :param images: ``{image_id: {'status': ..., 'disk_format': ...,
        'owner': project_id or None}}``: ``GET /v2/images/<id>`` answers the
        image as JSON (404 for an unknown one, or one whose owner is not
        the ``X-Project-Id`` of the request), and an upload answered with
        a 2xx makes it ``active``. ``GET .../file`` downloads an image
        with ``data`` (see :meth:`_download`).
    """

    def __init__(self, read_size=65536, on_error='raise', status=204,
                 images=None):
        self.read_size = read_size
        self.on_error = on_error
        self.status = status
        self.images = images
        self.calls = []
        self.app_iters = []

    @property
    def last(self):
        return self.calls[-1]

    def __call__(self, environ, start_response):
        call = Call(environ=dict(environ))
        self.calls.append(call)
        if self.images is not None and environ['REQUEST_METHOD'] == 'GET':
            if environ['PATH_INFO'].rstrip('/').endswith('/file'):
                return self._download(environ, start_response, call)
            return self._show(environ, start_response, call)
        if self.read_size is not None:
            pieces = []
            try:
                self._read(webob.Request(environ).body_file, pieces)
                call.finished = True
            except Exception as exc:
                call.error = exc
                if self.on_error == 'raise':
                    raise
                if self.on_error == 'wrap':
                    raise RuntimeError('store failed') from exc
                if self.on_error == 'unrelated':
                    raise RuntimeError('database is down')
                if self.on_error == '500':
                    return self._answer(start_response, '500 Internal '
                                                         'Server Error')
            finally:
                call.body = b''.join(pieces)
        image = (self.images or {}).get(
            environ['PATH_INFO'].split('/')[3:4][0]
            if environ['PATH_INFO'].count('/') >= 3 else None)
        if image is not None and self.status < 300:
            image['status'] = 'active'
        return self._answer(start_response, '%d Fake' % self.status)

    def _show(self, environ, start_response, call):
        call.finished = True
        image_id = environ['PATH_INFO'].rsplit('/', 1)[-1]
        image = self.images.get(image_id)
        if image is None or image.get('owner') not in (
                None, environ.get('HTTP_X_PROJECT_ID')):
            return self._answer(start_response, '404 Not Found')
        start_response('200 OK', [('Content-Type', 'application/json')])
        record = {key: value for key, value in image.items()
                  if key not in _DATA_KEYS}
        app_iter = LeakTrackingIter([json.dumps(dict(
            record, id=image_id)).encode()])
        self.app_iters.append(app_iter)
        return app_iter

    def _download(self, environ, start_response, call):
        """``GET .../file`` as Glance 33 answers it on a store that reads
        at an offset (``'ranged': False`` in the image: one that does not),
        range cases included (``doc/source/download.rst`` lists them).

        An image's ``data`` is its bytes; ``served`` (default ``data``) is
        what the store hands back, in pieces of ``piece`` bytes (default
        65536); ``Content-MD5`` is always the MD5 of ``data``.
        """
        call.finished = True
        image_id = environ['PATH_INFO'].split('/')[3]
        image = self.images.get(image_id)
        if image is None or image.get('owner') not in (
                None, environ.get('HTTP_X_PROJECT_ID')):
            return self._answer(start_response, '404 Not Found')
        if image.get('status') != 'active' or 'data' not in image:
            return self._answer(start_response, '204 No Content')
        data = image['data']
        served = image.get('served', data)
        size = len(data)
        headers = [('Content-Type', 'application/octet-stream'),
                   ('Content-MD5', hashlib.md5(data).hexdigest())]
        status = '200 OK'
        value = environ.get('HTTP_RANGE')
        content_range = environ.get('HTTP_CONTENT_RANGE')
        if value is not None or content_range is not None:
            if not image.get('ranged', True):
                return self._answer(start_response, '400 Bad Request')
            if value is not None and ',' in value:
                return self._answer(start_response, '400 Bad Request')
            if value is not None:
                requested = byterange.Range.parse(value)
                span = requested and requested.range_for_length(size)
                if requested and requested.end is None and (
                        requested.start < -size):
                    span = (0, size)  # Glance: a longer suffix is all
            else:
                requested = byterange.ContentRange.parse(content_range)
                span = requested and (requested.start, min(requested.stop,
                                                           size))
            if not span or span[0] >= size:
                return self._answer(start_response,
                                    '416 Requested Range Not Satisfiable')
            served = served[span[0]:span[1]]
            status = '206 Partial Content'
            headers.append(('Content-Range', 'bytes %d-%d/%d' % (
                span[0], span[1] - 1, size)))
        headers.append(('Content-Length', str(len(served))))
        start_response(status, headers)
        piece = image.get('piece', 65536)
        app_iter = LeakTrackingIter(
            [served[i:i + piece] for i in range(0, len(served), piece)])
        self.app_iters.append(app_iter)
        return app_iter

    def _answer(self, start_response, status):
        start_response(status, [('Content-Type', 'text/plain')])
        app_iter = LeakTrackingIter([b'fake glance'])
        self.app_iters.append(app_iter)
        return app_iter

    def _read(self, stream, pieces):
        how = self.read_size
        if how == 'line':
            pieces.extend(iter(stream.readline, b''))
        elif how == 'iter':
            pieces.extend(stream)
        elif how == 'all':
            pieces.append(stream.read())
            pieces.append(stream.read())
        elif how == 'into':
            buffer = bytearray(4099)
            while count := stream.readinto(buffer):
                pieces.append(bytes(buffer[:count]))
        else:
            while piece := stream.read(how):
                pieces.append(piece)

    def check(self):
        """What the teardown asserts: nothing leaked, nothing half-read."""
        assert all(i.closed for i in self.app_iters), 'app_iter not closed'
        for call in self.calls:
            reader = call.environ.get('wsgi.input')
            verdict = getattr(reader, 'error', None) is not None
            assert call.finished or verdict or call.error is not None or (
                self.read_size is None), 'body half-read without verdict'


def serve(app, request):
    """Run ``request`` through ``app`` as a WSGI server would.

    :returns: ``(status_int, headers dict, body bytes)``; the ``app_iter``
        is drained and closed, as PEP 3333 requires of a server.
    """
    started = []

    def start_response(status, headers, exc_info=None):
        started.append((status, headers))

    app_iter = app(request.environ, start_response)
    try:
        body = b''.join(app_iter)
    finally:
        close = getattr(app_iter, 'close', None)
        if close is not None:
            close()
    status, headers = started[-1]
    return webob.Response(body=body, status=status, headerlist=headers)


class UntouchableInput(io.RawIOBase):
    """A ``wsgi.input`` that fails the test if anyone reads it."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise AssertionError('the body was read')


class ChunkSource:
    """Chunks as a server's chunked reader returns them, then the end or
    an error."""

    def __init__(self, chunks, fail_with=None):
        self.chunks = list(chunks)
        self.fail_with = fail_with
        self.pulls = 0

    def __call__(self, hint=None):
        self.pulls += 1
        if self.chunks:
            return self.chunks.pop(0)
        if self.fail_with is not None:
            raise self.fail_with
        return b''
