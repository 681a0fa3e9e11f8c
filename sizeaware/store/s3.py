"""glance_store's S3 driver, minus unfinished multipart uploads on failure.

glance_store's S3 driver starts a multipart upload for a known-size image
at or above ``s3_store_large_object_size``, then reads the image. When
reading fails (the sizeaware filter refusing a body that does not match its
declared size, or the client going away) the exception leaves the driver
without aborting the multipart upload. The parts already sent stay in the
bucket, invisible in object listings, billed, and kept until a lifecycle
rule removes them.

This driver aborts every unfinished multipart upload of the image's key
when the upload fails. Glance never uploads one image twice at once (the
image is in ``saving`` while it does), so every such upload belongs to the
failed attempt.

Reads are restartable and ranged (:mod:`sizeaware.store.restart`):
``get()`` sends one ``GetObject``; when its body breaks mid-stream
(botocore's ``ReadTimeoutError``, ``ResponseStreamingError``,
``IncompleteReadError``, a reset connection, a stall), the rest is asked
for with ``Range`` from the exact byte and ``IfMatch`` the first answer's
ETag, at most ``read_retries`` times. botocore's own retries are switched
off for these requests (one option says how many times a read is
retried), and its connect and read timeouts are the backend's
``connect_timeout`` and ``read_timeout``. The driver declares random
reads, so Glance serves ranged downloads of its images.

Enable it by giving the backend the type ``sizeaware_s3`` instead of
``s3``; its options are those of the ``s3`` driver, plus the read options
of :data:`sizeaware.opts.store_read_opts`::

    [DEFAULT]
    enabled_backends = cloud:sizeaware_s3

    [cloud]
    s3_store_host = ...
    read_retries = 5
"""

import inspect
import threading

import boto3
from botocore import config as boto_config
from botocore import exceptions as boto_exceptions
from glance_store import capabilities
from glance_store import exceptions
from glance_store._drivers import s3
from oslo_log import log as logging
from oslo_utils import excutils
import urllib3

from sizeaware import opts
from sizeaware.store import restart

LOG = logging.getLogger(__name__)


# glance_store finds a driver's location class by name, in the driver's own
# module: image locations are the S3 driver's, unchanged.
StoreLocation = s3.StoreLocation


#: The entry point name. glance_store looks a backend's store up by its
#: type from ``enabled_backends`` used as a URI scheme, so the driver also
#: claims this name as a scheme; the locations it writes stay ``s3://``.
DRIVER_NAME = 'sizeaware_s3'


#: What botocore raises when a read's connection breaks, on top of
#: :data:`sizeaware.store.restart.BROKEN`.
BROKEN = restart.BROKEN + (
    boto_exceptions.HTTPClientError,      # ReadTimeoutError, streaming
    boto_exceptions.ConnectionError,      # connect refused or timed out
    boto_exceptions.IncompleteReadError,  # the body ended early
    urllib3.exceptions.HTTPError,
)

# Read clients, one per backend configuration: a botocore client is
# thread-safe and costly to make, and glance_store makes a new S3 store
# object for every operation.
_CLIENTS = {}
_CLIENTS_LOCK = threading.Lock()


class Store(s3.Store):
    """The S3 store; see the module docstring."""

    _CAPABILITIES = (s3.Store._CAPABILITIES |
                     capabilities.BitMasks.READ_RANDOM)
    OPTIONS = s3.Store.OPTIONS + opts.store_read_opts

    @staticmethod
    def get_schemes():
        return s3.Store.get_schemes() + (DRIVER_NAME,)

    @capabilities.check
    def get(self, location, offset=0, chunk_size=None, context=None):
        """The image's bytes ``[offset, offset + chunk_size)`` (all of it
        by default), read with restarts, and their length."""
        loc = location.store_location
        policy = restart.Policy.from_conf(self._store_conf())
        client = self._read_client(policy, loc)
        bucket, key = loc.bucket, loc.key

        def open_range(want):
            request = {'Bucket': bucket, 'Key': key}
            if want.range is not None:
                request['Range'] = want.range
            if want.etag is not None:
                request['IfMatch'] = want.etag
            try:
                answer = client.get_object(**request)
            except boto_exceptions.ClientError as exc:
                status = exc.response.get('ResponseMetadata', {}).get(
                    'HTTPStatusCode')
                if status == 404:
                    raise exceptions.NotFound(image=key) from exc
                if status in (412, 416) or (
                        status in restart.RETRYABLE_STATUSES):
                    return restart.Part(status)
                raise
            body = answer['Body']
            # StreamingBody's raw stream is urllib3's response (pinned by
            # a unit test).
            restart.set_body_timeout(body._raw_stream, policy.stall_timeout)
            return restart.Part(
                answer['ResponseMetadata']['HTTPStatusCode'], body,
                answer.get('ETag'), answer.get('ContentRange'),
                answer.get('ContentLength'), body.close)

        reader = restart.open_reader(
            restart.RestartingReader, open_range, offset, chunk_size,
            policy=policy, broken=BROKEN, name='s3://%s/%s' % (bucket, key))
        return restart.indexable(reader, self.READ_CHUNKSIZE), reader.expected

    def _store_conf(self):
        return restart.backend_options(self)

    def _read_client(self, policy, loc):
        """The backend's client for reads: the stock driver's client, with
        the policy's timeouts and without botocore's own retries.

        glance_store 5.x makes its client from the backend's options;
        4.x from the location's credentials (``_create_s3_client(loc)``).
        """
        from_location = 'loc' in inspect.signature(
            self._create_s3_client).parameters
        if from_location:
            access, secret = loc.accesskey, loc.secretkey
        else:
            access, secret = self.access_key, self.secret_key
        key = (self.backend_group, self.s3_host, self.region_name, access,
               secret, loc.bucket, policy)
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
        if client is not None:
            return client
        stock = (self._create_s3_client(loc) if from_location
                 else self._create_s3_client())
        config = stock.meta.config.merge(boto_config.Config(
            connect_timeout=policy.connect_timeout,
            read_timeout=policy.read_timeout,
            retries={'total_max_attempts': 1}))
        cacert = self._option_get('s3_store_cacert')
        endpoint = stock.meta.endpoint_url
        client = boto3.session.Session(
            aws_access_key_id=access,
            aws_secret_access_key=secret).client(
                's3', endpoint_url=endpoint,
                region_name=stock.meta.region_name,
                use_ssl=endpoint.startswith('https://'),
                verify=cacert or None, config=config)
        with _CLIENTS_LOCK:
            return _CLIENTS.setdefault(key, client)

    def _add_multipart(self, s3_client, image_file, image_size, bucket,
                       key, *args, **kwargs):
        """glance_store's multipart upload, aborted if it fails.

        A private method of glance_store's driver, overridden because it is
        the one place that knows the client, the bucket and the key when
        the multipart path fails; ``add()`` calls it with keyword arguments,
        so the parameter names matter as much as their order (a unit test
        pins them). The original exception is re-raised unchanged, with
        its traceback, whatever the cleanup does.
        """
        try:
            return super()._add_multipart(s3_client, image_file, image_size,
                                          bucket, key, *args, **kwargs)
        except Exception:
            with excutils.save_and_reraise_exception():
                abort_unfinished_uploads(s3_client, bucket, key)


def abort_unfinished_uploads(s3_client, bucket, key):
    """Abort every unfinished multipart upload of ``key`` in ``bucket``.

    The listing is paged with botocore's ``list_multipart_uploads``
    paginator: one answer holds at most ``MaxUploads`` uploads (1000 by
    default) and says ``IsTruncated`` with ``NextKeyMarker`` and
    ``NextUploadIdMarker`` when there are more, so reading only the first
    answer would leave the rest behind. The paginator also stops instead of
    looping when a server hands back the same markers twice.

    The listing asks for the prefix ``key`` because S3 offers no exact-key
    filter; uploads of other keys that merely start with it (another image
    whose id extends this one, an object named ``<key>.bak``) are not ours
    and are skipped.

    Each page's uploads are aborted before the next page is asked for, and
    one abort failing does not stop the others: whatever can be cleaned up
    is. The markers name the last upload listed, so aborting the uploads
    already listed does not shift the next page.

    Failures are logged, not raised: this runs while the caller handles
    the error that matters (the upload's own failure), which must reach
    Glance unchanged.
    """
    try:
        pages = s3_client.get_paginator('list_multipart_uploads').paginate(
            Bucket=bucket, Prefix=key)
        for page in pages:
            for upload in page.get('Uploads', []):
                if upload['Key'] == key:
                    _abort(s3_client, bucket, key, upload['UploadId'])
    except Exception:
        LOG.exception('Could not list the unfinished multipart uploads of '
                      '%s in bucket %s; those not aborted yet are left '
                      'behind', key, bucket)


def _abort(s3_client, bucket, key, upload_id):
    """Abort one upload; a failure is logged and the caller goes on."""
    try:
        s3_client.abort_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception:
        LOG.exception('Could not abort the unfinished multipart upload '
                      '%(upload)s of %(key)s in bucket %(bucket)s',
                      {'upload': upload_id, 'key': key, 'bucket': bucket})
    else:
        LOG.info('Aborted unfinished multipart upload %(upload)s of '
                 '%(key)s', {'upload': upload_id, 'key': key})
