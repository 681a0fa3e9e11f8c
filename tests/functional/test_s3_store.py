"""The declared size reaches a real S3 store, and a mismatch leaves nothing.

Glance runs with its S3 backend on radosgw, through the ``sizeaware_s3``
driver, with the large-object threshold lowered to 5 MiB so that a 12 MiB
image is a three-part multipart upload. Only a store that knows the size up
front uses multipart, so a multipart ETag (``"<md5>-3"``) on the object of a
*chunked* upload proves the size reached glance_store, on releases that read
the header and on those that ignore it.
"""

import os
import uuid

import pytest

from tests.functional import client
from tests.functional import conftest
from teststack import glance as glance_stack

MIB = 1024 * 1024
DATA = os.urandom(12 * MIB + 5)
N = len(DATA)


@pytest.fixture(scope='module', params=conftest.RELEASES,
                ids=['glance%s' % r for r in conftest.RELEASES])
def glance_s3(request, radosgw, s3):
    bucket = 'glance-%s' % uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=bucket)
    server = glance_stack.Glance(
        request.param, default_backend='cloud',
        backends={'cloud': ('sizeaware_s3', {
            's3_store_host': radosgw.endpoint,
            's3_store_access_key': radosgw.access_key,
            's3_store_secret_key': radosgw.secret_key,
            's3_store_bucket': bucket,
            's3_store_bucket_url_format': 'path',
            's3_store_large_object_size': 5,
            's3_store_large_object_chunk_size': 5,
        })})
    server.start()
    server.bucket = bucket
    yield server
    server.stop()


@pytest.fixture
def api(glance_s3):
    return client.GlanceClient(glance_s3.url, glance_s3.identity_headers(
        project_id=uuid.uuid4().hex))


def leftovers(s3, bucket, image_id):
    objects = s3.list_objects_v2(Bucket=bucket, Prefix=image_id)
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=image_id)
    return ([o['Key'] for o in objects.get('Contents', [])],
            [u['UploadId'] for u in uploads.get('Uploads', [])])


@pytest.mark.parametrize('chunked', [False, True], ids=['length', 'chunked'])
def test_declared_size_makes_a_multipart_upload(api, glance_s3, s3, chunked):
    image_id = api.create_image()
    resp = api.upload(image_id, DATA, size=N, chunked=chunked, piece=MIB)
    assert resp.status == 204, resp
    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('active', N)
    head = s3.head_object(Bucket=glance_s3.bucket, Key=image_id)
    assert head['ContentLength'] == N
    assert head['ETag'].strip('"').endswith('-3'), head['ETag']
    assert api.download(image_id).body == DATA


@pytest.mark.parametrize('delta', [+1, -1], ids=['over', 'under'])
def test_mismatch_leaves_no_object_and_no_multipart_upload(
        api, glance_s3, s3, delta):
    image_id = api.create_image()
    resp = api.upload(image_id, DATA, size=N - delta, chunked=True,
                      piece=MIB)
    assert resp.status == 400, resp
    assert 'mismatch' in resp.text
    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('queued', None)
    assert leftovers(s3, glance_s3.bucket, image_id) == ([], [])
    # The client can retry at once with the right size.
    assert api.upload(image_id, DATA, size=N, chunked=True,
                      piece=MIB).status == 204
    assert api.get_image(image_id)['status'] == 'active'
