"""The tempest plugin's upload helper: what it sends through tempest's own
image client, and which tempest.lib exception each answer raises.

The client is tempest's real ``ImagesClient`` with a keystone v3 auth
provider holding a token and a catalog (no keystone is asked), and its
own HTTP pool sends to a server on 127.0.0.1 that reads the chunked body
chunk by chunk and records it.
"""

# The classes are bound now: eventlet's green http.server (imported by
# other tests of the suite through eventlet.wsgi) rebinds the package's
# ``http.server`` attribute to its copy, whose sockets wait on a hub
# nobody runs.
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
import json
import threading

import pytest
from tempest.lib import auth
from tempest.lib import exceptions as lib_exc
from tempest.lib.services.image.v2 import images_client

from sizeaware_tempest_plugin import upload

TOKEN = 'a-token'
REGION = 'RegionOne'


class Response(dict):
    """What tempest's HTTP pool returns as a response: lower-case headers
    and a ``status``."""

    def __init__(self, status, headers=None):
        super().__init__((k.lower(), v) for k, v in (headers or {}).items())
        self.status = status
        self['status'] = str(status)


@pytest.mark.parametrize('status, error', sorted(upload.ERRORS.items()))
def test_each_error_status_raises_tempests_exception(status, error):
    resp = Response(status, {'Content-Type': 'text/plain'})
    with pytest.raises(error) as info:
        upload.raise_for_status(resp, b'refused')
    assert type(info.value) is error
    assert info.value.resp is resp
    assert info.value.resp_body == 'refused'


def test_the_size_filter_answers_map_as_the_plugin_tests_expect():
    assert upload.ERRORS[400] is lib_exc.BadRequest
    assert upload.ERRORS[413] is lib_exc.OverLimit


def test_a_json_error_body_is_parsed():
    document = {'message': 'too big'}
    resp = Response(413, {'Content-Type': 'application/json; charset=UTF-8'})
    with pytest.raises(lib_exc.OverLimit) as info:
        upload.raise_for_status(resp, json.dumps(document).encode())
    assert info.value.resp_body == document


def test_413_with_retry_after_is_a_rate_limit():
    resp = Response(413, {'Retry-After': '5'})
    with pytest.raises(lib_exc.RateLimitExceeded):
        upload.raise_for_status(resp, b'slow down')


@pytest.mark.parametrize('status', [402, 405, 411, 418, 429, 502, 503])
def test_other_error_statuses_are_unexpected(status):
    with pytest.raises(lib_exc.UnexpectedResponseCode) as info:
        upload.raise_for_status(Response(status), b'no')
    assert str(status) in str(info.value)


@pytest.mark.parametrize('status', [200, 201, 204, 301, 399])
def test_no_error_below_400(status):
    upload.raise_for_status(Response(status))


class Handler(BaseHTTPRequestHandler):
    """Reads a PUT's chunked body chunk by chunk; answers with the server's
    ``answer``; records what it received in the server's ``received``."""

    protocol_version = 'HTTP/1.1'

    def do_PUT(self):
        chunks = []
        if self.headers.get('Transfer-Encoding') == 'chunked':
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                chunk = self.rfile.read(size + 2)[:size]  # and its CRLF
                if not size:
                    break
                chunks.append(chunk)
        self.server.received.append({
            'method': self.command, 'path': self.path,
            'headers': dict(self.headers), 'chunks': chunks})
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        # As tempest's pool asks (Connection: close): else urllib3 could
        # send a retry on this connection as the server closes it.
        self.send_header('Connection', 'close')
        self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    httpd.received = []
    httpd.answer = (204, {}, b'')
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,),
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    thread.join()
    httpd.server_close()


def images_client_for(server, endpoint_type='publicURL', **kwargs):
    """Tempest's ``ImagesClient`` whose catalog has the image service's
    public endpoint of ``REGION`` on ``server`` and its other endpoints on
    hosts that do not exist."""
    base = 'http://127.0.0.1:%d/image' % server.server_port
    credentials = auth.KeystoneV3Credentials(
        username='u', password='p', project_name='p', user_domain_name='d',
        project_domain_name='d')
    provider = auth.KeystoneV3AuthProvider(credentials,
                                           'http://keystone.invalid/v3')
    provider.cache = (TOKEN, {
        'expires_at': '2999-01-01T00:00:00.000000Z',
        'catalog': [{'type': 'image', 'name': 'glance', 'endpoints': [
            {'interface': 'internal', 'region': REGION,
             'url': 'http://internal.invalid/image'},
            {'interface': 'public', 'region': 'Elsewhere',
             'url': 'http://elsewhere.invalid/image'},
            {'interface': 'public', 'region': REGION, 'url': base},
        ]}]})
    return images_client.ImagesClient(provider, 'image', REGION,
                                      endpoint_type=endpoint_type, **kwargs)


def test_put_sends_the_token_and_the_headers_in_64_kib_chunks(server):
    data = bytes(range(256)) * 1024 + b'tail'
    result = upload.put_image_data(
        images_client_for(server), 'an-image', data, target='stage',
        image_size=len(data), headers={'X-Extra': 'yes'})
    assert result.response.status == 204
    (sent,) = server.received
    assert sent['method'] == 'PUT'
    # The catalog's public endpoint of the region, with tempest's API
    # version.
    assert sent['path'] == '/image/v2/images/an-image/stage'
    assert sent['headers']['X-Auth-Token'] == TOKEN
    assert sent['headers']['X-OpenStack-Image-Size'] == str(len(data))
    assert sent['headers']['Content-Type'] == 'application/octet-stream'
    assert sent['headers']['X-Extra'] == 'yes'
    assert sent['headers']['Transfer-Encoding'] == 'chunked'
    assert 'Content-Length' not in sent['headers']
    assert [len(c) for c in sent['chunks']] == [upload.CHUNK_SIZE] * 4 + [4]
    assert b''.join(sent['chunks']) == data


def test_put_without_a_size_sends_no_size_header(server):
    upload.put_image_data(images_client_for(server), 'an-image', b'x')
    (sent,) = server.received
    assert sent['path'] == '/image/v2/images/an-image/file'
    assert 'X-OpenStack-Image-Size' not in sent['headers']
    assert sent['chunks'] == [b'x']


def test_put_goes_through_the_images_clients_proxy(server):
    # The catalog's endpoint for this client does not exist: only the
    # proxy, the test server, is reached.
    client = images_client_for(server, endpoint_type='internalURL',
                               proxy_url='http://127.0.0.1:%d'
                               % server.server_port)
    upload.put_image_data(client, 'an-image', b'x')
    (sent,) = server.received
    assert sent['path'] == (
        'http://internal.invalid/image/v2/images/an-image/file')


def test_put_logs_the_size_not_the_data(server, caplog):
    client = images_client_for(server)
    with caplog.at_level('DEBUG', logger=client.LOG.name):
        upload.put_image_data(client, 'an-image', b'secret-bytes' * 3)
    assert 'secret-bytes' not in caplog.text
    assert '<36 bytes>' in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize('status, headers, body, error', [
    (400, {'Content-Type': 'text/plain'}, b'size mismatch',
     lib_exc.BadRequest),
    (413, {'Content-Type': 'application/json'}, b'{"message": "too big"}',
     lib_exc.OverLimit),
    # tempest's own request() raises UnexpectedContentType for these.
    (400, {'Content-Type': 'text/html; charset=UTF-8'}, b'<p>no</p>',
     lib_exc.BadRequest),
])
def test_put_raises_tempests_exception_for_an_error(server, status, headers,
                                                    body, error):
    server.answer = (status, headers, body)
    with pytest.raises(error) as info:
        upload.put_image_data(images_client_for(server), 'an-image', b'x',
                              image_size=2)
    assert info.value.resp.status == status


def test_a_resent_request_carries_the_whole_body_again(server):
    # Tempest's HTTP pool (urllib3) sends a PUT answered 413 or 503 with
    # Retry-After again, up to ten times, and then gives up.
    server.answer = (413, {'Retry-After': '0', 'Content-Type': 'text/plain'},
                     b'slow down')
    data = b'y' * (upload.CHUNK_SIZE + 1)
    with pytest.raises(lib_exc.RateLimitExceeded):
        upload.put_image_data(images_client_for(server), 'an-image', data)
    assert len(server.received) > 1
    for sent in server.received:
        assert b''.join(sent['chunks']) == data


def test_chunks_start_again_each_time():
    chunks = upload.Chunks(b'z' * (2 * upload.CHUNK_SIZE + 1))
    assert [len(c) for c in chunks] == [upload.CHUNK_SIZE] * 2 + [1]
    assert [len(c) for c in chunks] == [upload.CHUNK_SIZE] * 2 + [1]
    assert list(upload.Chunks(b'')) == []


def test_put_checks_the_success_status(server):
    server.answer = (200, {'Content-Type': 'application/json'}, b'{}')
    with pytest.raises(lib_exc.InvalidHttpSuccessCode):
        upload.put_image_data(images_client_for(server), 'an-image', b'x')
