"""A WSGI app that drains an upload the way Glance reads one, with and
without ``sizeaware`` in front, in one process.

Served by uwsgi for ``upload_throughput.py`` (part a)::

    PUT /with/v2/images/<id>/file     SizeFilter -> drain
    PUT /without/v2/images/<id>/file  drain
    PUT /raw/v2/images/<id>/file      raw: the server's floor

The prefix moves to ``SCRIPT_NAME``, so the filter sees the upload path it
acts on. ``drain`` reads the body through Glance's own request class
(``glance.common.wsgi.Request.body_file``, the Glance 33 venv has it): a
chunked body under uwsgi comes from ``uwsgi.chunked_read()`` through
Glance's ``_UWSGIChunkFile``, anything else from webob's ``body_file``. It
reads ``DRAIN_READ_SIZE`` bytes at a time (default 64 KiB, what the
filesystem store asks for), keeps nothing, and answers 200 with the count.
``raw`` reads the body straight from the server, with neither webob nor
Glance: ``uwsgi.chunked_read()`` until ``b''`` for a chunked body,
``wsgi.input.read(DRAIN_READ_SIZE)`` up to ``CONTENT_LENGTH`` otherwise;
what no reader in Python can beat.
"""

import json
import os

import webob

try:  # Glance's own body reading, when Glance is importable
    from glance.common.wsgi import Request as GlanceRequest
    READER = 'glance.common.wsgi.Request'
except ImportError:  # pragma: no cover - outside a Glance venv
    GlanceRequest = None
    READER = 'copy of Glance 33 _UWSGIChunkFile'

from sizeaware.middleware import size_filter

READ_SIZE = int(os.environ.get('DRAIN_READ_SIZE', 64 * 1024))


class _UWSGIChunkFile:
    """Glance 33's reader of a chunked body under uwsgi (verbatim logic)."""

    def __init__(self):
        self._buffer = b''

    def read(self, length=None):
        if length == 0:
            return b''
        if length and length < 0:
            length = None
        length = length if length is not None else 1024 * 1024
        import uwsgi
        while len(self._buffer) < length:
            data = uwsgi.chunked_read()
            if not data:
                break
            self._buffer += data
        chunk = self._buffer[:length]
        self._buffer = self._buffer[length:]
        return chunk


def _body_file(environ):
    if GlanceRequest is not None:
        return GlanceRequest(environ).body_file
    request = webob.Request(environ)
    if ('uwsgi.version' in environ and request.headers.get(
            'transfer-encoding', '').lower() == 'chunked'):
        return _UWSGIChunkFile()
    return request.body_file


def drain(environ, start_response):
    body = _body_file(environ)
    total = 0
    while True:
        data = body.read(READ_SIZE)
        if not data:
            break
        total += len(data)
    payload = json.dumps({'received': total, 'reader': READER,
                          'body_file': type(body).__name__}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(payload)))])
    return [payload]


def raw(environ, start_response):
    total = 0
    if environ.get('HTTP_TRANSFER_ENCODING', '').lower() == 'chunked':
        import uwsgi
        while True:
            data = uwsgi.chunked_read()
            if not data:
                break
            total += len(data)
    else:
        length = int(environ.get('CONTENT_LENGTH') or 0)
        read = environ['wsgi.input'].read
        while total < length:
            data = read(min(READ_SIZE, length - total))
            if not data:
                break
            total += len(data)
    payload = json.dumps({'received': total, 'reader': 'raw',
                          'body_file': 'raw'}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(payload)))])
    return [payload]


filtered = size_filter.SizeFilter.factory({})(drain)

ROUTES = {'/with': filtered, '/without': drain, '/raw': raw}


def application(environ, start_response):
    path = environ.get('PATH_INFO', '')
    prefix = '/' + path.split('/', 2)[1] if path.count('/') >= 2 else path
    app = ROUTES.get(prefix)
    if app is None:
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'use /with/... or /without/...\n']
    environ['SCRIPT_NAME'] = environ.get('SCRIPT_NAME', '') + prefix
    environ['PATH_INFO'] = path[len(prefix):]
    return app(environ, start_response)
