"""A small Glance v2 client on http.client, for precise control of framing.

Tests need to send exactly the bytes and headers they mean: a header value
Python's ``int()`` would accept, a chunked body one byte too long, headers
without a body. Higher-level clients normalise such things away.
"""

import http.client
import json
import socket
import time
import urllib.parse


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        #: Header names lower-cased: servers spell them differently
        #: (eventlet sends ``X-Openstack-Request-Id``).
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return '<Response %d %r>' % (self.status, self.body[:200])


class GlanceClient:
    """Talks to one Glance endpoint with a fixed set of identity headers."""

    def __init__(self, url, headers):
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname
        self.port = parsed.port
        self.headers = dict(headers)

    def request(self, method, path, body=None, headers=None, chunked=False,
                timeout=120):
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout)
        try:
            all_headers = dict(self.headers, **(headers or {}))
            try:
                if chunked:
                    conn.putrequest(method, path, skip_accept_encoding=True)
                    for name, value in all_headers.items():
                        conn.putheader(name, value)
                    conn.putheader('Transfer-Encoding', 'chunked')
                    conn.endheaders()
                    for piece in body:
                        conn.send(b'%x\r\n%s\r\n' % (len(piece), piece))
                    conn.send(b'0\r\n\r\n')
                else:
                    conn.request(method, path, body=body,
                                 headers=all_headers)
            except (BrokenPipeError, ConnectionResetError):
                # A server may answer before reading the body and close:
                # the answer is still there to read.
                pass
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def create_image(self, **extra):
        props = dict({'disk_format': 'raw', 'container_format': 'bare',
                      'name': 'sizeaware-test'}, **extra)
        resp = self.request('POST', '/v2/images', body=json.dumps(props),
                            headers={'Content-Type': 'application/json'})
        assert resp.status == 201, resp
        return resp.json()['id']

    def get_image(self, image_id):
        resp = self.request('GET', '/v2/images/%s' % image_id)
        assert resp.status == 200, resp
        return resp.json()

    def upload(self, image_id, data, size=None, target='file',
               chunked=False, piece=65536, headers=None, version='v2'):
        """PUT ``data`` to ``/file`` or ``/stage``.

        :param size: the ``X-OpenStack-Image-Size`` value (a string is sent
            as it is), or None for no header.
        :param chunked: send the body with chunked transfer coding, in
            pieces of ``piece`` bytes; otherwise with a Content-Length.
        """
        all_headers = {'Content-Type': 'application/octet-stream'}
        if size is not None:
            all_headers['X-OpenStack-Image-Size'] = str(size)
        all_headers.update(headers or {})
        path = '/%s/images/%s/%s' % (version, image_id, target)
        if chunked:
            body = [data[i:i + piece] for i in range(0, len(data), piece)]
            return self.request('PUT', path, body=body, headers=all_headers,
                                chunked=True)
        return self.request('PUT', path, body=data, headers=all_headers)

    def import_glance_direct(self, image_id):
        return self.request(
            'POST', '/v2/images/%s/import' % image_id,
            body=json.dumps({'method': {'name': 'glance-direct'}}),
            headers={'Content-Type': 'application/json'})

    def download(self, image_id):
        return self.request('GET', '/v2/images/%s/file' % image_id)

    def wait_for_status(self, image_id, statuses, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            image = self.get_image(image_id)
            if image['status'] in statuses:
                return image
            if time.monotonic() > deadline:
                raise AssertionError('image %s stayed %s' % (
                    image_id, image['status']))
            time.sleep(0.2)

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
        lines = ['PUT %s HTTP/1.1' % path, 'Host: %s:%d' % (self.host,
                                                            self.port)]
        for name, value in dict(self.headers, **headers).items():
            lines.append('%s: %s' % (name, value))
        raw = ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')
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
