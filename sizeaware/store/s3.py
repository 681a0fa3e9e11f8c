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

Enable it by giving the backend the type ``sizeaware_s3`` instead of
``s3``; its options are those of the ``s3`` driver::

    [DEFAULT]
    enabled_backends = cloud:sizeaware_s3

    [cloud]
    s3_store_host = ...
"""

from glance_store._drivers import s3
from oslo_log import log as logging
from oslo_utils import excutils

LOG = logging.getLogger(__name__)


# glance_store finds a driver's location class by name, in the driver's own
# module: image locations are the S3 driver's, unchanged.
StoreLocation = s3.StoreLocation


#: The entry point name. glance_store looks a backend's store up by its
#: type from ``enabled_backends`` used as a URI scheme, so the driver also
#: claims this name as a scheme; the locations it writes stay ``s3://``.
DRIVER_NAME = 'sizeaware_s3'


class Store(s3.Store):
    """The S3 store; see the module docstring."""

    @staticmethod
    def get_schemes():
        return s3.Store.get_schemes() + (DRIVER_NAME,)

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
