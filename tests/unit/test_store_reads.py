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

``sizeaware_http`` is proven against nginx in the functional tests; here
only the stock request it overrides is pinned.
"""

import hashlib
import os

from botocore import response as boto_response
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
def stubber(s3_stubber):
    """The shared stubber, and every response queued was asked for."""
    yield s3_stubber
    s3_stubber.assert_no_pending_responses()


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
def store(s3_client):
    store = configured(StubbedReads, retry_backoff=0)
    store.client = s3_client
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


def test_retries_spent_fail_the_read(s3_client, stubber):
    """A break, then restarts that break before their first byte: the
    retries are of failures in a row."""
    store = configured(StubbedReads, retry_backoff=0, read_retries=2)
    store.client = s3_client
    expect(stubber, answer(limit=10))
    for _ in range(2):
        expect(stubber, answer(10, N, limit=0, ranged=True),
               Range='bytes=10-%d' % (N - 1), IfMatch=ETAG)
    data, _ = store.get(location(store))
    with pytest.raises(exceptions.BackendReadFailed, match='after 2'):
        read_all(data)


def test_breaks_after_progress_outnumbering_the_retries_are_survived(
        s3_client, stubber):
    store = configured(StubbedReads, retry_backoff=0, read_retries=2)
    store.client = s3_client
    expect(stubber, answer(limit=10))
    for start in range(10, 15):
        expect(stubber, answer(start, N, limit=1, ranged=True),
               Range='bytes=%d-%d' % (start, N - 1), IfMatch=ETAG)
    expect(stubber, answer(15, N, ranged=True),
           Range='bytes=15-%d' % (N - 1), IfMatch=ETAG)
    data, _ = store.get(location(store))
    assert read_all(data) == DATA


def test_a_first_request_never_answered_is_glances_503(s3_client, stubber):
    store = configured(StubbedReads, retry_backoff=0, read_retries=1)
    store.client = s3_client
    for _ in range(2):
        stubber.add_client_error('get_object', 'ServiceUnavailable',
                                 http_status_code=503)
    with pytest.raises(store_exceptions.RemoteServiceUnavailable):
        store.get(location(store))


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


# sizeaware_http (its reads against nginx: tests/functional/)


def http_store(**read_options):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    store = http.Store(conf, backend='web')
    for name, value in read_options.items():
        conf.set_override(name, value, group='web')
    store.configure(re_raise_bsc=True)
    return store


class RecordingSession:
    """Records the requests a store makes; answers each with a marker."""

    def __init__(self):
        self.calls = []

    def request(self, verb, url, **settings):
        self.calls.append((verb, url, settings))
        return 'answer'


def test_http_head_of_the_stock_driver_gets_the_timeouts():
    """``get_size()`` (and Glance's check of an added location) runs the
    stock driver's ``_query``, which calls ``_get_response``, a private
    method the driver overrides to add the timeouts: pinned here."""
    store = http_store(connect_timeout=2, read_timeout=3)
    store._read_session = RecordingSession()
    loc = glance_store.location.Location(
        'web', http.StoreLocation, store.conf,
        uri='http://127.0.0.1:9/image', backend='web').store_location
    assert store._get_response(loc, 'HEAD') == 'answer'
    (verb, url, settings), = store._read_session.calls
    assert (verb, url) == ('HEAD', 'http://127.0.0.1:9/image')
    assert settings['timeout'] == (2, 3)
    assert settings['stream'] is True
    assert settings['allow_redirects'] is False
