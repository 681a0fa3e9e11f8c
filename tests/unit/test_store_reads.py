"""``sizeaware_s3``'s and ``sizeaware_http``'s reads: what they ask their
client library for, and how they take its answers and errors.

The S3 client is a real botocore client with botocore's ``Stubber``: each
``GetObject`` must carry the parameters the test expects (``Range``,
``IfMatch``), and its body is botocore's own ``StreamingBody`` over a raw
stream that breaks the way urllib3 breaks, so botocore's own conversion
(``ResponseStreamingError``, ``IncompleteReadError``) is what the driver
sees. The driver runs through glance_store's ``Store.get()``, capability
check included, on a store configured with a minimal oslo.config; only its
read client is the stubbed one. The whole read path is proven on radosgw
in ``tests/functional/test_restart_reads.py``.

``sizeaware_http`` reads from a small threaded web server in the test
(:class:`WebServer`) through requests and urllib3, as in Glance.
"""

import hashlib
import os

import boto3
from botocore import response as boto_response
from botocore import stub
from glance_store import capabilities
from glance_store import exceptions as store_exceptions
import glance_store.location
from oslo_config import cfg
import pytest
import urllib3

from sizeaware import exceptions
from sizeaware.store import http
from sizeaware.store import restart
from sizeaware.store import s3

BUCKET = 'glance'
KEY = '6f1c2a77-0000-4000-8000-000000000002'
DATA = os.urandom(200_003)
N = len(DATA)
ETAG = '"0123456789abcdef0123456789abcdef"'


class Raw:
    """urllib3's response as botocore reads it: ``read(amt)``, breaking
    after ``limit`` bytes with urllib3's ``ProtocolError`` (a reset) or,
    with ``short``, ending cleanly (botocore then raises
    ``IncompleteReadError`` itself)."""

    def __init__(self, data, limit=None, short=False):
        self.data, self.offset = data, 0
        self.limit = len(data) if limit is None else limit
        self.short = short

    def read(self, amt=None):
        if self.offset >= self.limit and self.limit < len(self.data):
            if not self.short:
                raise urllib3.exceptions.ProtocolError(
                    'Connection broken', ConnectionResetError(104, 'reset'))
            return b''
        amt = len(self.data) if amt is None else amt
        piece = self.data[self.offset:min(self.offset + amt, self.limit)]
        self.offset += len(piece)
        return piece

    def close(self):
        pass


def answer(start=0, stop=N, limit=None, short=False, ranged=False):
    raw = Raw(DATA[start:stop], limit, short)
    result = {'Body': boto_response.StreamingBody(raw, stop - start),
              'ETag': ETAG, 'ContentLength': stop - start,
              'ResponseMetadata': {'HTTPStatusCode': 206 if ranged else 200}}
    if ranged:
        result['ContentRange'] = 'bytes %d-%d/%d' % (start, stop - 1, N)
    return result


@pytest.fixture
def client():
    return boto3.client('s3', endpoint_url='http://127.0.0.1:9',
                        region_name='us-east-1', aws_access_key_id='access',
                        aws_secret_access_key='secret')


@pytest.fixture
def stubber(client):
    with stub.Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


class StubbedReads(s3.Store):
    """The driver, reading through the test's client."""

    client = None

    def _read_client(self, policy, loc):
        self.policy = policy
        return self.client


def configured(store_class, **read_options):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    store = store_class(conf, backend='cloud')
    for name, value in dict({
            's3_store_host': 'http://127.0.0.1:9',
            's3_store_access_key': 'access',
            's3_store_secret_key': 'secret',
            's3_store_bucket': BUCKET}, **read_options).items():
        conf.set_override(name, value, group='cloud')
    store.configure(re_raise_bsc=True)
    return store


@pytest.fixture
def store(client):
    store = configured(StubbedReads, retry_backoff=0)
    store.client = client
    return store


def location(store):
    return glance_store.location.Location(
        'cloud', s3.StoreLocation, store.conf,
        uri='s3://access:secret@127.0.0.1:9/%s/%s' % (BUCKET, KEY),
        backend='cloud')


def expect(stubber, result, **params):
    stubber.add_response('get_object', result,
                         dict({'Bucket': BUCKET, 'Key': KEY}, **params))


def read_all(data):
    return b''.join(data)


@pytest.mark.parametrize('short', [False, True], ids=['reset', 'short'])
def test_a_broken_body_is_asked_again_from_the_byte_it_stopped_at(
        store, stubber, short):
    expect(stubber, answer(limit=70_000, short=short))
    expect(stubber, answer(70_000, N, limit=150_000 - 70_000, short=short,
                           ranged=True),
           Range='bytes=70000-%d' % (N - 1), IfMatch=ETAG)
    expect(stubber, answer(150_000, N, ranged=True),
           Range='bytes=150000-%d' % (N - 1), IfMatch=ETAG)
    data, size = store.get(location(store))
    assert size == N
    assert hashlib.sha256(read_all(data)).digest() == hashlib.sha256(
        DATA).digest()


def test_a_ranged_read_asks_for_its_range_and_restarts_within_it(
        store, stubber):
    expect(stubber, answer(1000, 6000, limit=2000, ranged=True),
           Range='bytes=1000-5999')
    expect(stubber, answer(3000, 6000, ranged=True),
           Range='bytes=3000-5999', IfMatch=ETAG)
    data, size = store.get(location(store), offset=1000, chunk_size=5000)
    assert size == 5000
    assert read_all(data) == DATA[1000:6000]


def test_a_412_on_a_restart_fails_the_read(store, stubber):
    expect(stubber, answer(limit=10_000))
    stubber.add_client_error('get_object', 'PreconditionFailed',
                             http_status_code=412)
    data, _ = store.get(location(store))
    with pytest.raises(exceptions.BackendObjectChanged):
        read_all(data)


def test_a_missing_object_is_glance_stores_not_found(store, stubber):
    stubber.add_client_error('get_object', 'NoSuchKey', http_status_code=404)
    with pytest.raises(store_exceptions.NotFound):
        store.get(location(store))


def test_retries_spent_fail_the_read(client, stubber):
    store = configured(StubbedReads, retry_backoff=0, read_retries=2)
    store.client = client
    expect(stubber, answer(limit=10))
    expect(stubber, answer(10, N, limit=11 - 10, ranged=True),
           Range='bytes=10-%d' % (N - 1), IfMatch=ETAG)
    expect(stubber, answer(11, N, limit=12 - 11, ranged=True),
           Range='bytes=11-%d' % (N - 1), IfMatch=ETAG)
    data, _ = store.get(location(store))
    with pytest.raises(exceptions.BackendReadFailed, match='after 2'):
        read_all(data)


def test_the_read_options_come_from_the_backends_section(store):
    store.conf.set_override('stall_timeout', 7.5, group='cloud')
    store.conf.set_override('read_retries', 9, group='cloud')
    assert restart.Policy.from_conf(store._store_conf()) == restart.Policy(
        read_retries=9, retry_backoff=0, stall_timeout=7.5)


def test_the_read_client_has_the_timeouts_and_no_retries_of_its_own():
    store = configured(s3.Store, connect_timeout=3, read_timeout=4)
    policy = restart.Policy.from_conf(store._store_conf())
    loc = location(store).store_location
    client = store._read_client(policy, loc)
    assert client.meta.config.connect_timeout == 3
    assert client.meta.config.read_timeout == 4
    assert client.meta.config.retries['total_max_attempts'] == 1
    assert client.meta.endpoint_url == 'http://127.0.0.1:9'
    # Made once per configuration, not per read.
    assert store._read_client(policy, loc) is client


def test_botocore_streaming_body_keeps_urllib3s_response_as_raw_stream():
    """The driver sets the stall timeout on ``StreamingBody._raw_stream``'s
    socket, a private attribute: pinned here."""
    raw = Raw(b'x')
    assert boto_response.StreamingBody(raw, 1)._raw_stream is raw


@pytest.mark.parametrize('driver', [s3.Store, http.Store])
def test_drivers_declare_random_reads_and_the_read_options(driver):
    assert driver._CAPABILITIES & capabilities.BitMasks.READ_RANDOM == (
        capabilities.BitMasks.READ_RANDOM)
    names = {o.name for o in driver.OPTIONS}
    assert {'read_retries', 'retry_backoff', 'connect_timeout',
            'read_timeout', 'stall_timeout'} <= names


# sizeaware_http, against a small web server in the test


class WebServer:
    """A threaded HTTP server of one object at ``/image`` (``/moved``
    redirects there, anything else is 404): ETag, ``Range`` (one range)
    and ``If-Match`` as a web server answers them; the first answer of
    each ``cut`` offset ends its body there and closes. Records every
    request's headers."""

    def __init__(self, data, etag='"abc-123"', cuts=()):
        import http.server
        import threading
        self.data, self.etag, self.cuts = data, etag, list(cuts)
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.send_header('ETag', outer.etag)
                self.send_header('Content-Length', str(len(outer.data)))
                self.end_headers()

            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                if self.path == '/moved':
                    self.send_response(302)
                    self.send_header('Location', '/image')
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                if self.path != '/image':
                    self.send_response(404)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                match = self.headers.get('If-Match')
                if match is not None and match != outer.etag:
                    self.send_response(412)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                start, stop, status = 0, len(outer.data), 200
                wanted = self.headers.get('Range')
                if wanted:
                    first, last = wanted[len('bytes='):].split('-')
                    start = int(first)
                    stop = int(last) + 1 if last else len(outer.data)
                    status = 206
                self.send_response(status)
                self.send_header('ETag', outer.etag)
                self.send_header('Content-Length', str(stop - start))
                if status == 206:
                    self.send_header('Content-Range', 'bytes %d-%d/%d' % (
                        start, stop - 1, len(outer.data)))
                self.end_headers()
                cut = next((c for c in outer.cuts if start <= c < stop),
                           None)
                if cut is not None:
                    outer.cuts.remove(cut)
                    self.wfile.write(outer.data[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(outer.data[start:stop])

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a reader that closed early: expected here

        self.server = Server(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d' % self.server.server_port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    servers = []

    def make(**kwargs):
        servers.append(WebServer(DATA, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def http_store(**read_options):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    store = http.Store(conf, backend='web')
    for name, value in dict({'retry_backoff': 0},
                            **read_options).items():
        conf.set_override(name, value, group='web')
    store.configure(re_raise_bsc=True)
    return store


def http_location(store, url):
    return glance_store.location.Location(
        'web', http.StoreLocation, store.conf, uri=url, backend='web')


def test_http_restarts_with_range_and_if_match_after_the_redirect(web):
    server = web(cuts=[50_000, 120_000])
    store = http_store()
    data, size = store.get(http_location(store, server.url + '/moved'))
    assert size == N
    assert read_all(data) == DATA
    paths = [path for path, _ in server.requests]
    # Restarts go to the URL that answered, not through the redirect.
    assert paths == ['/moved', '/image', '/image', '/image']
    first, *restarts = [headers for _, headers in server.requests[1:]]
    assert 'Range' not in first and 'If-Match' not in first
    assert [(h['Range'], h['If-Match']) for h in restarts] == [
        ('bytes=50000-%d' % (N - 1), '"abc-123"'),
        ('bytes=120000-%d' % (N - 1), '"abc-123"')]


def test_http_ranged_read_and_a_changed_object(web):
    server = web(cuts=[3000])
    store = http_store()
    data, size = store.get(http_location(store, server.url + '/image'),
                           offset=1000, chunk_size=4000)
    assert size == 4000
    # Replaced after the first answer: its restart is refused (412).
    server.etag = '"other"'
    with pytest.raises(exceptions.BackendObjectChanged):
        read_all(data)
    assert [h.get('Range') for _, h in server.requests] == [
        'bytes=1000-4999', 'bytes=3000-4999']


def test_http_unreachable_server_is_remote_service_unavailable(web):
    server = web()
    url = server.url + '/image'
    server.close()
    store = http_store(read_retries=1, connect_timeout=1)
    with pytest.raises(store_exceptions.RemoteServiceUnavailable):
        store.get(http_location(store, url))


def test_http_missing_object_is_not_found(web):
    server = web()
    store = http_store()
    with pytest.raises(store_exceptions.NotFound):
        store.get(http_location(store, server.url + '/nothing'))


def test_http_get_size_is_the_stock_drivers(web):
    server = web()
    store = http_store()
    assert store.get_size(http_location(store, server.url + '/image')) == N


def test_http_get_size_times_out_on_a_silent_server():
    """The stock driver's HEAD (``get_size()``, and Glance's check of an
    added location) waits forever on a server that accepts and never
    answers; through the overridden ``_get_response`` it has the read
    timeout."""
    import socket
    import time

    import requests
    silent = socket.create_server(('127.0.0.1', 0))
    try:
        url = 'http://127.0.0.1:%d/image' % silent.getsockname()[1]
        store = http_store(read_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(requests.exceptions.Timeout):
            store.get_size(http_location(store, url))
        assert time.monotonic() - started < 5
    finally:
        silent.close()
