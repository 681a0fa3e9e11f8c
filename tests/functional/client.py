"""The functional tests' Glance client, on the library's
:class:`sizeaware.client.connection.GlanceConnection`.

Requests go through the connection the ``sizeaware`` command uses (a
keystoneauth1 session without a token: identity comes from the headers
given, an ``X-Auth-Token`` among them behind keystone). A server that
answers before it has read the body and closes leaves its answer readable:
urllib3 swallows the broken pipe of the send and reads it.

Each request goes out on a connection of its own, closed once the answer
is read, so that no test depends on a connection an earlier request left
behind (a server that answers early may be about to close it).

Some framing no HTTP client sends: a request's headers without the body
they announce, a body cut short, a header value with leading blanks
(requests refuses it). :meth:`GlanceClient.send_raw`,
:meth:`~GlanceClient.send_partial` and :meth:`~GlanceClient.send_headers_only`
write those on a plain socket, and are for those cases only.
"""

import contextlib
import json
import socket
import urllib.parse

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
import requests
import urllib3

from sizeaware.client import connection


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        #: Header names lower-cased: servers spell them differently
        #: (eventlet sends ``X-Openstack-Request-Id``).
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    @classmethod
    def of(cls, response):
        """A Response with what a ``requests.Response`` received."""
        return cls(response.status_code, response.headers.items(),
                   response.content)

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return '<Response %d %r>' % (self.status, self.body[:200])


def broken_by(exc):
    """What broke a connection, under the library's wrapping of it: the
    socket's error, or http.client's ``IncompleteRead`` for a body that
    ended before its ``Content-Length``."""
    while isinstance(exc, (urllib3.exceptions.HTTPError,
                           requests.exceptions.RequestException,
                           ks_exceptions.ClientException)):
        if (isinstance(exc, urllib3.exceptions.ProtocolError)
                and len(exc.args) > 1
                and isinstance(exc.args[1], BaseException)):
            inner = exc.args[1]
        else:
            inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _text_headers(headers):
    """Header values as text: tests give numbers as they are."""
    return {name: value if isinstance(value, (str, bytes)) else str(value)
            for name, value in (headers or {}).items()}


class GlanceClient:
    """Talks to one Glance endpoint with a fixed set of identity headers.

    Answers are :class:`Response` objects, whatever their status; a
    connection that breaks before an answer raises ``ConnectionError``.
    """

    def __init__(self, url, headers):
        parsed = urllib.parse.urlsplit(url)
        self.url = url.rstrip('/')
        self.host = parsed.hostname
        self.port = parsed.port
        self.headers = dict(headers)

    @contextlib.contextmanager
    def glance_connection(self, timeout=120):
        """The library's connection to this Glance, with this client's
        headers, on connections of its own that are closed on exit."""
        session = ks_session.Session(auth=noauth.NoAuth())
        # No Accept unless a test names one: with requests' default
        # ``*/*`` webob words its errors in HTML, and the tests read the
        # plain text a client that names none gets.
        session.session.headers.pop('Accept', None)
        try:
            yield connection.GlanceConnection(
                session, self.url, _text_headers(self.headers),
                authenticated=False, read_timeout=timeout)
        finally:
            session.session.close()

    @contextlib.contextmanager
    def _answering(self, what, timeout=120):
        with self.glance_connection(timeout) as conn:
            try:
                yield conn
            except connection.CONNECTION_ERRORS as exc:
                raise ConnectionError('%s: %s' % (what, exc)) from exc

    def request(self, method, path, body=None, headers=None, chunked=False,
                timeout=120):
        """``body`` is bytes, or with ``chunked`` a list of pieces sent
        as one chunk each."""
        if chunked:
            body = iter(body)
        with self._answering('%s %s' % (method, path), timeout) as conn:
            return Response.of(conn.request(
                method, path, headers=_text_headers(headers), data=body,
                read_timeout=timeout))

    @contextlib.contextmanager
    def streaming(self, method, path, headers=None, timeout=60):
        """The ``requests.Response`` of a request whose body is left to
        read from its ``raw`` (urllib3) response; what breaks the read
        raises urllib3's errors (see :func:`broken_by`)."""
        with self._answering('%s %s' % (method, path), timeout) as conn:
            response = conn.request(method, path,
                                    headers=_text_headers(headers),
                                    stream=True, read_timeout=timeout)
            with contextlib.closing(response):
                yield response

    def create_image(self, **extra):
        props = dict({'disk_format': 'raw', 'container_format': 'bare',
                      'name': 'sizeaware-test'}, **extra)
        with self._answering('POST image') as conn:
            return conn.create_image(**props)['id']

    def get_image(self, image_id):
        with self._answering('GET image') as conn:
            return conn.get_image(image_id)

    def upload(self, image_id, data, size=None, target='file',
               chunked=False, piece=65536, headers=None, version='v2'):
        """PUT ``data`` to ``/file`` or ``/stage``.

        :param size: the ``X-OpenStack-Image-Size`` value (a string is sent
            as it is), or None for no header.
        :param chunked: send the body with chunked transfer coding, in
            pieces of ``piece`` bytes; otherwise with a Content-Length.
        """
        body = data
        if chunked:
            body = (data[i:i + piece] for i in range(0, len(data), piece))
        with self._answering('PUT image data') as conn:
            return Response.of(conn.put_data(
                image_id, body, target=target, size=size,
                headers=_text_headers(headers), version=version))

    def import_glance_direct(self, image_id):
        with self._answering('POST import') as conn:
            return Response.of(conn.import_image(image_id))

    def download(self, image_id):
        return self.request('GET', '/v2/images/%s/file' % image_id)

    def wait_for_status(self, image_id, statuses, timeout=60):
        with self._answering('GET image') as conn:
            return conn.wait_for_status(image_id, statuses, timeout=timeout)

    # -- framing no HTTP client sends ---------------------------------------

    def _raw_head(self, method, path, headers):
        lines = ['%s %s HTTP/1.1' % (method, path),
                 'Host: %s:%d' % (self.host, self.port)]
        for name, value in dict(self.headers, **headers).items():
            lines.append('%s: %s' % (name, value))
        return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')

    def send_raw(self, method, path, headers, body, timeout=120):
        """Send a request exactly as given (``body`` raw bytes, framing
        included, the framing headers among ``headers``) and read its
        answer: for header values requests refuses to send."""
        with socket.create_connection((self.host, self.port),
                                      timeout=timeout) as sock:
            sock.sendall(self._raw_head(method, path, headers) + body)
            return _read_answer(sock.makefile('rb'))

    def send_headers_only(self, path, headers, timeout=15):
        """Send a request's headers and no body; return the status line.

        Proves that an answer comes before any body byte is sent.
        """
        return self.send_partial(path, headers, b'', timeout=timeout)

    def send_partial(self, path, headers, body, then='wait', timeout=30):
        """Send a PUT's headers and ``body`` (raw bytes, framing included),
        then either wait for the answer without sending more (``'wait'``:
        returns the status line) or close the connection (``'close'``:
        returns None).

        A server may answer before the body is in and close: the send then
        fails (reset or broken pipe), and the answer must still be
        readable. What the send raised is kept in :attr:`send_error`.
        """
        raw = self._raw_head('PUT', path, headers)
        self.send_error = None
        with socket.create_connection((self.host, self.port),
                                      timeout=timeout) as sock:
            try:
                sock.sendall(raw + body)
            except (BrokenPipeError, ConnectionResetError) as exc:
                self.send_error = exc
            if then == 'close':
                return None
            received = b''
            while b'\r\n' not in received:
                piece = sock.recv(4096)
                if not piece:
                    break
                received += piece
        return received.split(b'\r\n', 1)[0].decode('latin-1')


def _read_answer(stream):
    """The :class:`Response` read off ``stream``: its body framed by
    ``Content-Length``, chunked, or running to the connection's end."""
    status_line = stream.readline().decode('latin-1')
    status = int(status_line.split()[1])
    headers = []
    while (line := stream.readline()) not in (b'\r\n', b'\n', b''):
        name, _, value = line.decode('latin-1').partition(':')
        headers.append((name.strip(), value.strip()))
    found = {name.lower(): value for name, value in headers}
    if status in (204, 304) or 100 <= status < 200:
        body = b''
    elif 'content-length' in found:
        body = stream.read(int(found['content-length']))
    elif found.get('transfer-encoding', '').lower() == 'chunked':
        pieces = []
        while size := int(stream.readline().split(b';')[0], 16):
            pieces.append(stream.read(size))
            stream.readline()
        body = b''.join(pieces)
    else:
        body = stream.read()
    return Response(status, headers, body)
