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
        try:
            return super()._add_multipart(s3_client, image_file, image_size,
                                          bucket, key, *args, **kwargs)
        except Exception:
            with excutils.save_and_reraise_exception():
                abort_unfinished_uploads(s3_client, bucket, key)


def abort_unfinished_uploads(s3_client, bucket, key):
    """Abort every unfinished multipart upload of ``key`` in ``bucket``.

    Failures are logged, not raised: the caller is already handling the
    error that matters.
    """
    try:
        listing = s3_client.list_multipart_uploads(Bucket=bucket, Prefix=key)
        for upload in listing.get('Uploads', []):
            if upload['Key'] != key:
                continue
            s3_client.abort_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload['UploadId'])
            LOG.info('Aborted unfinished multipart upload %(upload)s of '
                     '%(key)s', {'upload': upload['UploadId'], 'key': key})
    except Exception:
        LOG.exception('Could not abort the unfinished multipart uploads of '
                      '%s in bucket %s', key, bucket)
