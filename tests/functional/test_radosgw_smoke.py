"""Smoke test of the test stack's one-node Ceph cluster and its S3 endpoint.

Starts a real cluster (``teststack.ceph.RadosGW``), exercises what Glance's
S3 store relies on (multipart upload, ranged GET, listing and aborting
multipart uploads, deletes) with boto3, then stops the cluster and checks
that none of its processes is left.

Needs the Debian packages in ``bindep.txt`` (ceph-mon, ceph-osd, ceph-mgr,
radosgw, ceph-common) and boto3.
"""

import hashlib
import os
import pathlib
import shutil
import sys

import pytest

boto3 = pytest.importorskip('boto3')
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from teststack import ceph  # noqa: E402

MiB = 1024 * 1024
BUCKET = 'smoke'

_MISSING = [b for b in ('ceph-mon', 'ceph-osd', 'ceph-mgr', 'radosgw',
                        'radosgw-admin', 'ceph', 'monmaptool')
            if shutil.which(b) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason='Ceph not installed (missing %s); install the '
    'packages in bindep.txt' % ', '.join(_MISSING))


def s3_client(rgw):
    # botocore's defaults otherwise (botocore >= 1.36 adds CRC32 checksum
    # headers to uploads; radosgw 16.2 over plain HTTP accepts them), as
    # glance_store's S3 driver would send.
    config = Config(signature_version='s3v4',
                    s3={'addressing_style': 'path'},
                    retries={'max_attempts': 2, 'mode': 'standard'})
    return boto3.client('s3', endpoint_url=rgw.endpoint,
                        aws_access_key_id=rgw.access_key,
                        aws_secret_access_key=rgw.secret_key,
                        region_name='us-east-1', config=config)


@pytest.fixture(scope='module')
def rgw():
    cluster = ceph.RadosGW()
    cluster.start()
    print('radosgw %s ready; timings %s' % (cluster.endpoint,
                                            cluster.timings))
    try:
        yield cluster
    finally:
        cluster.stop()
    if not cluster.leftover_pids():
        cluster.stop(remove=True)


@pytest.fixture(scope='module')
def s3(rgw):
    client = s3_client(rgw)
    client.create_bucket(Bucket=BUCKET)
    return client


def test_ready(rgw):
    assert rgw.endpoint == 'http://127.0.0.1:%d' % rgw.port
    assert rgw.access_key and rgw.secret_key
    assert rgw.health['status'] in ('HEALTH_OK', 'HEALTH_WARN')
    assert set(rgw.pids) == {'mon', 'mgr', 'osd', 'rgw'}


def test_multipart_upload_and_ranged_get(s3):
    part1 = os.urandom(5 * MiB)
    part2 = os.urandom(3 * MiB)
    data = part1 + part2
    key = 'image-8mib'

    upload_id = s3.create_multipart_upload(
        Bucket=BUCKET, Key=key)['UploadId']
    parts = []
    for number, body in ((1, part1), (2, part2)):
        resp = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id,
                              PartNumber=number, Body=body)
        assert resp['ETag'].strip('"') == hashlib.md5(body).hexdigest()
        parts.append({'PartNumber': number, 'ETag': resp['ETag']})
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                 MultipartUpload={'Parts': parts})

    # radosgw 16.2 may answer an empty ETag to CompleteMultipartUpload:
    # the multipart ETag is read with HEAD.
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head['ContentLength'] == 8 * MiB
    md5s = b''.join(hashlib.md5(p).digest() for p in (part1, part2))
    assert head['ETag'].strip('"') == '%s-2' % hashlib.md5(md5s).hexdigest()

    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got['ResponseMetadata']['HTTPStatusCode'] == 200
    assert got['Body'].read() == data

    start, end = 5 * MiB - 100, 5 * MiB + 99  # across the part boundary
    ranged = s3.get_object(Bucket=BUCKET, Key=key,
                           Range='bytes=%d-%d' % (start, end))
    assert ranged['ResponseMetadata']['HTTPStatusCode'] == 206
    assert ranged['ContentRange'] == 'bytes %d-%d/%d' % (start, end,
                                                         len(data))
    assert ranged['ContentLength'] == 200
    assert ranged['Body'].read() == data[start:end + 1]


def test_abort_multipart_upload(s3):
    key = 'aborted'
    upload_id = s3.create_multipart_upload(
        Bucket=BUCKET, Key=key)['UploadId']
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1,
                   Body=os.urandom(5 * MiB))

    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get('Uploads', [])
    assert [(u['Key'], u['UploadId']) for u in uploads] == [(key, upload_id)]

    s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get('Uploads', []) == []
    # radosgw 16.2 answers NoSuchKey where AWS answers NoSuchUpload.
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)
    assert err.value.response['Error']['Code'] in ('NoSuchUpload',
                                                   'NoSuchKey')
    listed = s3.list_objects_v2(Bucket=BUCKET).get('Contents', [])
    assert key not in [o['Key'] for o in listed]


def test_delete_objects(rgw, s3):
    s3.put_object(Bucket=BUCKET, Key='small', Body=b'x' * 1000)
    keys = [o['Key'] for o in
            s3.list_objects_v2(Bucket=BUCKET).get('Contents', [])]
    assert 'small' in keys
    for key in keys:
        s3.delete_object(Bucket=BUCKET, Key=key)
    listing = s3.list_objects_v2(Bucket=BUCKET)
    assert listing['KeyCount'] == 0
    assert 'Contents' not in listing
    rgw.gc()  # deleted tail objects are collected at once


def test_stop_leaves_no_process(rgw):
    pids = rgw.pids
    assert set(pids) == {'mon', 'mgr', 'osd', 'rgw'}
    assert sorted(rgw.leftover_pids()) == sorted(pids.values())
    rgw.stop()
    assert rgw.pids == {}
    for name, pid in pids.items():
        assert not ceph.pid_alive(pid), '%s (PID %d) still runs' % (
            name, pid)
    assert rgw.leftover_pids() == []
