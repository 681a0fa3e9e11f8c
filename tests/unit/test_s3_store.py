"""The ``sizeaware_s3`` driver aborts what glance_store's S3 driver leaves.

The S3 client is a real botocore client with botocore's ``Stubber``: every
request it makes must be the next one the test queued, with the parameters
the test expects, and gets the canned answer. A request the test did not
queue fails inside the client; since the cleanup logs its failures instead
of raising them, the tests also record every operation the client was asked
for (a botocore event) and look at the error log, so an unexpected call
cannot pass unnoticed.

The driver is tested through glance_store's own ``Store.add()``, as Glance
calls it, on a real store configured with a minimal oslo.config; only the
factory of its S3 client is replaced, to hand it the stubbed client.
"""

import datetime
import inspect
import io
import logging

from botocore import exceptions as boto_exceptions
from glance_store._drivers import s3 as glance_s3
from oslo_config import cfg
import pytest

from sizeaware.store import s3

BUCKET = 'glance'
KEY = '6f1c2a77-0000-4000-8000-000000000001'
#: Another image's key that starts with ``KEY``: listed, never aborted.
OTHER_KEY = KEY + '-old'
MIB = 1024 * 1024
#: One full 5 MiB part and 5 bytes more.
DATA = bytes(range(256)) * (5 * MIB // 256) + b'12345'
INITIATED = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
LOGGER = 'sizeaware.store.s3'


@pytest.fixture
def calls(s3_client):
    """``(operation, params)`` of every request the client is asked for.

    Recorded before the stubber sees the request, so a call the test did
    not expect is here even though the stubber's error about it is caught
    and logged by the code under test.
    """
    made = []

    def record(model, params, **kwargs):
        made.append((model.name, dict(params)))

    s3_client.meta.events.register('provide-client-params.s3', record)
    return made


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def errors(caplog):
    return [r for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.ERROR]


def aborted(calls):
    return [(p['Key'], p['UploadId']) for name, p in calls
            if name == 'AbortMultipartUpload']


def listings(calls):
    return [p for name, p in calls if name == 'ListMultipartUploads']


def listing_page(uploads, next_markers=None):
    """A ``ListMultipartUploads`` answer for the prefix ``KEY``.

    :param uploads: ``(key, upload_id)`` pairs.
    :param next_markers: ``(key, upload_id)`` of the last upload listed
        when the answer is truncated, None for the last page.
    """
    page = {
        'Bucket': BUCKET, 'Prefix': KEY, 'MaxUploads': 2,
        'IsTruncated': next_markers is not None,
        'Uploads': [{'Key': key, 'UploadId': upload_id,
                     'Initiated': INITIATED}
                    for key, upload_id in uploads],
    }
    if next_markers is not None:
        page['NextKeyMarker'], page['NextUploadIdMarker'] = next_markers
    return page


def expect_listing(s3_stubber, uploads, next_markers=None, after=None):
    params = {'Bucket': BUCKET, 'Prefix': KEY}
    if after is not None:
        params['KeyMarker'], params['UploadIdMarker'] = after
    s3_stubber.add_response('list_multipart_uploads',
                         listing_page(uploads, next_markers), params)


def expect_abort(s3_stubber, upload_id, key=KEY):
    s3_stubber.add_response('abort_multipart_upload', {},
                         {'Bucket': BUCKET, 'Key': key,
                          'UploadId': upload_id})


# abort_unfinished_uploads


def test_every_upload_of_the_key_is_aborted_across_a_truncated_listing(
        s3_client, s3_stubber, calls, log):
    expect_listing(s3_stubber, [(KEY, 'u1'), (KEY, 'u2')],
                   next_markers=(KEY, 'u2'))
    expect_abort(s3_stubber, 'u1')
    expect_abort(s3_stubber, 'u2')
    expect_listing(s3_stubber, [(KEY, 'u3'), (OTHER_KEY, 'u4')],
                   after=(KEY, 'u2'))
    expect_abort(s3_stubber, 'u3')

    assert s3.abort_unfinished_uploads(s3_client, BUCKET, KEY) is None

    s3_stubber.assert_no_pending_responses()
    assert aborted(calls) == [(KEY, 'u1'), (KEY, 'u2'), (KEY, 'u3')]
    assert len(listings(calls)) == 2
    assert errors(log) == []
    assert sum('Aborted unfinished multipart upload' in r.getMessage()
               for r in log.records) == 3


def test_a_listing_failing_on_its_second_page_keeps_the_first_pages_aborts(
        s3_client, s3_stubber, calls, log):
    expect_listing(s3_stubber, [(KEY, 'u1'), (KEY, 'u2')],
                   next_markers=(KEY, 'u2'))
    expect_abort(s3_stubber, 'u1')
    expect_abort(s3_stubber, 'u2')
    s3_stubber.add_client_error('list_multipart_uploads', 'InternalError',
                             http_status_code=500)

    s3.abort_unfinished_uploads(s3_client, BUCKET, KEY)

    s3_stubber.assert_no_pending_responses()
    assert aborted(calls) == [(KEY, 'u1'), (KEY, 'u2')]
    error, = errors(log)
    assert isinstance(error.exc_info[1], boto_exceptions.ClientError)
    assert KEY in error.getMessage()


def test_one_abort_failing_does_not_stop_the_others(
        s3_client, s3_stubber, calls, log):
    expect_listing(s3_stubber, [(KEY, 'u1'), (KEY, 'u2')])
    s3_stubber.add_client_error('abort_multipart_upload', 'NoSuchUpload',
                             http_status_code=404)
    expect_abort(s3_stubber, 'u2')

    s3.abort_unfinished_uploads(s3_client, BUCKET, KEY)

    s3_stubber.assert_no_pending_responses()
    assert aborted(calls) == [(KEY, 'u1'), (KEY, 'u2')]
    error, = errors(log)
    assert 'u1' in error.getMessage()
    assert error.exc_info[1].response['Error']['Code'] == 'NoSuchUpload'


# The driver, through glance_store's add()


class Refused(ValueError):
    """Stands for the size filter's error for a body shorter than declared.

    A ``ValueError``, as the filter's is, so that Glance restores the image
    to ``queued``.
    """


class ShortBody:
    """An image body that raises on the read that would reach its end.

    The size filter's reader behaves so when the body ends before the size
    the client declared: it fills every read or raises, never returning a
    short read. Raises the same object every time, kept in ``error``.
    """

    def __init__(self, data):
        self._data = io.BytesIO(data)
        self.error = None

    def read(self, size=-1):
        piece = self._data.read(size)
        if size < 0 or len(piece) < size:
            self.error = self.error or Refused('body ended early')
            raise self.error
        return piece


class StubbedClientStore(s3.Store):
    """The ``sizeaware_s3`` driver, unchanged, talking to the given client.

    glance_store makes a new S3 client for every operation; this store
    hands out the test's stubbed client instead. Nothing else differs.
    """

    def __init__(self, conf, backend, client):
        super().__init__(conf, backend=backend)
        self._client = client

    def _create_s3_client(self):
        return self._client


@pytest.fixture
def store(s3_client):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    store = StubbedClientStore(conf, 'cloud', s3_client)
    for name, value in {
            's3_store_host': 'http://127.0.0.1:9',
            's3_store_access_key': 'access',
            's3_store_secret_key': 'secret',
            's3_store_bucket': BUCKET,
            's3_store_large_object_size': 5,
            's3_store_large_object_chunk_size': 5}.items():
        conf.set_override(name, value, group='cloud')
    store.configure(re_raise_bsc=True)
    return store


def expect_multipart_start(s3_stubber, upload_id='up-1'):
    """What glance_store asks before reading: bucket, object, new upload."""
    s3_stubber.add_response('head_bucket', {}, {'Bucket': BUCKET})
    s3_stubber.add_client_error('head_object', '404', http_status_code=404,
                             expected_params={'Bucket': BUCKET, 'Key': KEY})
    s3_stubber.add_response('create_multipart_upload',
                         {'Bucket': BUCKET, 'Key': KEY,
                          'UploadId': upload_id},
                         {'Bucket': BUCKET, 'Key': KEY})


def test_a_failed_multipart_add_is_aborted_and_its_error_raised_unchanged(
        store, s3_stubber, calls, log):
    expect_multipart_start(s3_stubber, 'up-1')
    # The first 5 MiB part goes out before the read that fails.
    s3_stubber.add_response('upload_part', {'ETag': '"part-1"'})
    expect_listing(s3_stubber, [(KEY, 'up-1')])
    expect_abort(s3_stubber, 'up-1')
    body = ShortBody(DATA)

    with pytest.raises(Refused) as raised:
        store.add(KEY, body, len(DATA) + 1, 'sha256')

    assert raised.value is body.error
    # The traceback is the original one, down to the failing read.
    assert raised.traceback[-1].name == 'read'
    assert '_add_multipart' in [entry.name for entry in raised.traceback]
    s3_stubber.assert_no_pending_responses()
    assert aborted(calls) == [(KEY, 'up-1')]
    assert errors(log) == []


def test_a_failing_cleanup_is_logged_and_the_original_error_raised(
        store, s3_stubber, calls, log):
    expect_multipart_start(s3_stubber, 'up-1')
    s3_stubber.add_response('upload_part', {'ETag': '"part-1"'})
    s3_stubber.add_client_error('list_multipart_uploads', 'AccessDenied',
                             http_status_code=403)
    body = ShortBody(DATA)

    with pytest.raises(Refused) as raised:
        store.add(KEY, body, len(DATA) + 1, 'sha256')

    assert raised.value is body.error
    assert raised.traceback[-1].name == 'read'
    s3_stubber.assert_no_pending_responses()
    assert aborted(calls) == []
    error, = errors(log)
    assert error.exc_info[1].response['Error']['Code'] == 'AccessDenied'


def test_a_successful_multipart_add_lists_and_aborts_nothing(
        store, s3_stubber, calls, log):
    expect_multipart_start(s3_stubber, 'up-1')
    # Two parts (5 MiB and 5 bytes), uploaded by glance_store's threads in
    # either order: same answer for both.
    s3_stubber.add_response('upload_part', {'ETag': '"part"'})
    s3_stubber.add_response('upload_part', {'ETag': '"part"'})
    s3_stubber.add_response('complete_multipart_upload',
                         {'Bucket': BUCKET, 'Key': KEY})

    location, size, *_ = store.add(KEY, io.BytesIO(DATA), len(DATA),
                                   'sha256')

    assert location.endswith('/%s/%s' % (BUCKET, KEY))
    assert size == len(DATA)
    s3_stubber.assert_no_pending_responses()
    assert listings(calls) == [] and aborted(calls) == []
    assert errors(log) == []


def test_glance_store_still_has_the_private_method_we_override():
    """Fails loudly when a glance_store upgrade renames ``_add_multipart``.

    The driver overrides it, and glance_store's ``add()`` calls it with
    keyword arguments: a rename of the method or of one of the parameters
    the override names would silently bypass the cleanup or break uploads.
    """
    method = getattr(glance_s3.Store, '_add_multipart', None)
    assert method is not None, (
        "glance_store's S3 driver has no _add_multipart any more: "
        'sizeaware_s3 overrides nothing and aborts nothing')
    relied_on = ['self', 's3_client', 'image_file', 'image_size', 'bucket',
                 'key']
    parameters = list(inspect.signature(method).parameters.values())
    assert [(p.name, p.kind) for p in parameters[:len(relied_on)]] == [
        (name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in relied_on], inspect.signature(method)
    assert s3.Store._add_multipart is not method
