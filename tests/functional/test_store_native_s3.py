"""Store-native sessions on a real S3 (radosgw): every range goes straight
up as parts of the image's own multipart upload, and Glance gets only the
location.

Glance 33 under uwsgi (and 30 under eventlet when the run has it, with its
glance_store 4.x, whose S3 locations carry the credentials) with its only
backend ``sizeaware_s3`` on the run's radosgw and the resumable filter's
default ``session_storage = store``. Each test checks the bucket itself
(boto3 as the store's user): the multipart upload exists from the first
range and holds the parts sent, no object exists before the last byte, the
finished object is the one glance_store's driver serves, and whatever ends
a session without an image (a cancel, a refusal) leaves no object and no
multipart upload behind. A range that does not start on a part boundary
(or where the bytes held in its part end) is 416 and keeps nothing; a tus
client whose PATCHes end mid-part has each part's start kept as its tail,
as tusd's ``.part`` objects are.
"""

import functools
import hashlib
import os
import uuid

import pytest
from tusclient import client as tus_client

from tests.functional import client
from tests.functional import conftest
from tests.functional import test_store_native as native
from tests.functional.test_resumable_faults import SERVERS

MiB = 1024 * 1024
PART = 8 * MiB
DATA = os.urandom(3 * PART + 7)
N = len(DATA)
ROLES = ('member', 'reader')
put_range = functools.partial(native.put_range, data=DATA)
session = native.session


@pytest.fixture(scope='module', params=SERVERS,
                ids=['glance%s-%s' % d for d in SERVERS])
def glance(request, radosgw, s3, tmp_path_factory):
    release, server = request.param
    bucket = 'native-%s-%s' % (release, server)
    s3.create_bucket(Bucket=bucket)
    glance = conftest.glance_on(
        release, server, resumable={}, processes=2, threads=4,
        workdir=tmp_path_factory.mktemp('native-s3'),
        default_backend='cloud', backends={'cloud': ('sizeaware_s3', {
            's3_store_host': radosgw.endpoint,
            's3_store_access_key': radosgw.access_key,
            's3_store_secret_key': radosgw.secret_key,
            's3_store_bucket': bucket,
            's3_store_bucket_url_format': 'path'})})
    glance.bucket = bucket
    glance.start()
    yield glance
    glance.stop()


@pytest.fixture
def api(glance):
    return client.GlanceClient(glance.url, glance.identity_headers(
        uuid.uuid4().hex, roles=ROLES))


def uploads(s3, glance, image_id):
    """The multipart uploads of the image's key in the bucket."""
    listed = s3.list_multipart_uploads(Bucket=glance.bucket,
                                       Prefix=image_id)
    return [u for u in listed.get('Uploads', ()) if u['Key'] == image_id]


def keys(s3, glance, prefix):
    listed = s3.list_objects_v2(Bucket=glance.bucket, Prefix=prefix)
    return [item['Key'] for item in listed.get('Contents', ())]


def test_parts_go_straight_up(glance, api, s3):
    image_id = api.create_image()
    assert put_range(api, image_id, PART, 2 * PART - 1).status == 204
    doc = session(api, image_id)
    assert doc['part_size'] == PART
    assert doc['ranges_held'] == [[PART, 2 * PART - 1]]
    (upload,) = uploads(s3, glance, image_id)
    parts = s3.list_parts(Bucket=glance.bucket, Key=image_id,
                          UploadId=upload['UploadId'])['Parts']
    assert [(p['PartNumber'], p['Size']) for p in parts] == [(2, PART)]
    assert keys(s3, glance, image_id) == []      # no object yet
    assert put_range(api, image_id, 3 * PART, N - 1).status == 204
    assert put_range(api, image_id, 0, PART - 1).status == 204
    resp = put_range(api, image_id, 2 * PART, 3 * PART - 1)
    assert resp.status == 204, resp
    image = api.get_image(image_id)
    assert image['status'] == 'active' and image['size'] == N
    assert session(api, image_id)['phase'] == 'finished_success'
    assert uploads(s3, glance, image_id) == []
    stored = s3.get_object(Bucket=glance.bucket, Key=image_id)['Body']
    assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(
        DATA).hexdigest()
    # glance_store's driver serves it, and deletes it with the image.
    assert api.request('GET', '/v2/images/%s/file' % image_id).body == DATA
    assert api.request('DELETE', '/v2/images/%s' % image_id).status == 204
    assert image_id not in keys(s3, glance, image_id)


def test_a_range_off_the_part_boundaries_is_416(glance, api, s3):
    image_id = api.create_image()
    resp = put_range(api, image_id, MiB, PART - 1)
    assert resp.status == 416 and str(PART) in resp.text, resp
    assert session(api, image_id)['bytes_held'] == 0


def test_tus_patches_ending_mid_part(glance, api, s3, tmp_path):
    image_id = api.create_image()
    path = tmp_path / 'image'
    path.write_bytes(DATA)
    tus = tus_client.TusClient(glance.url + '/v2/images/%s/file' % image_id,
                               headers=dict(api.headers))
    uploader = tus.uploader(str(path), chunk_size=3 * MiB)
    uploader.upload(stop_at=6 * MiB)
    # 6 MiB sent: kept as the first part's tail.
    doc = session(api, image_id)
    assert doc['ranges_held'] == [[0, 6 * MiB - 1]], doc
    uploader.upload()
    image = api.get_image(image_id)
    assert image['status'] == 'active' and image['size'] == N
    assert api.request('GET', '/v2/images/%s/file' % image_id).body == DATA
    assert [k for k in keys(s3, glance, 'sizeaware-sessions/%s/'
                            % image_id) if '/tail' in k] == []


def test_a_cancel_leaves_nothing(glance, api, s3):
    image_id = api.create_image()
    assert put_range(api, image_id, 0, PART - 1).status == 204
    assert uploads(s3, glance, image_id)
    resp = api.request('DELETE', '/v2/images/%s/file/session' % image_id)
    assert resp.status == 204, resp
    assert uploads(s3, glance, image_id) == []
    assert image_id not in keys(s3, glance, image_id)


def test_refused_data_leaves_nothing(glance, api, s3):
    image_id = api.create_image(disk_format='qcow2')
    for first in range(0, N, PART):
        resp = put_range(api, image_id, first, min(first + PART, N) - 1)
    assert resp.status == 400 and 'qcow2' in resp.text, resp
    assert session(api, image_id)['phase'] == 'finished_failure'
    assert uploads(s3, glance, image_id) == []
    assert image_id not in keys(s3, glance, image_id)
    assert api.get_image(image_id)['status'] == 'queued'
