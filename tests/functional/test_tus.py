"""tus 1.0 against a real Glance, driven by unmodified tus clients.

Glance 33 under uwsgi (two processes sharing one spool directory) behind
the run's keystone, with ``... authtoken context resumable sizeaware
rootapp``; the clients carry real tokens of member users of two projects.
The clients are tuspy and aiotus as published on PyPI, used through their
public API only, on a 256 MiB image.
"""

import asyncio
import hashlib
import io
import os
import urllib.parse

import aiotus
import pytest
from tusclient import client as tus_client
from tusclient import exceptions as tus_exceptions

from tests.functional import client
from tests.functional import conftest
from tests.functional import faultproxy
from tests.functional.test_resumable import holding

MiB = 1024 * 1024
DATA = os.urandom(256 * MiB)
SHA256 = hashlib.sha256(DATA).hexdigest()
#: tuspy sends the file in PATCHes of this size (its default would read the
#: whole file into memory and send one PATCH).
CHUNK = 64 * MiB
#: Where the proxy drops the connection: in the third PATCH.
CUT = 160 * MiB


@pytest.fixture(scope='module')
def glance(postgres, keystone):
    """Glance 33 behind the run's keystone, with the resumable filter."""
    with conftest.glance_behind_keystone(postgres, keystone, 'glance33tus',
                                         resumable={}) as server:
        yield server


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    return conftest.write_image(tmp_path_factory, 'tus', DATA)


@pytest.fixture
def identity(glance):
    return {'X-Auth-Token': glance.tokens[conftest.KEYSTONE_USERS[0]]}


@pytest.fixture
def proxy(glance):
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        yield proxy


def assert_active_with(api, image_id):
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['size'] == len(DATA)
    body = api.download(image_id).body
    assert hashlib.sha256(body).hexdigest() == SHA256


def cut_upload(proxy, identity, image_file, image_id, target):
    """Upload with tuspy through ``proxy``, cut at :data:`CUT`; resume
    with a new ``Uploader(url=...)``; returns the offset its HEAD found."""
    tus = tus_client.TusClient(
        '%s/v2/images/%s/%s' % (proxy.url, image_id, target),
        headers=identity)
    uploader = tus.uploader(file_path=image_file, chunk_size=CHUNK)
    proxy.cut_at(CUT)
    with pytest.raises(tus_exceptions.TusUploadFailed):
        uploader.upload()
    assert proxy.cut.is_set()
    assert uploader.url.startswith(tus.url + '/tus/')
    # The new uploader sends HEAD at once, while the server may still be
    # winding up the cut PATCH: the offset is what that PATCH kept.
    resumed = tus.uploader(file_path=image_file, url=uploader.url,
                           chunk_size=CHUNK)
    offset = resumed.offset
    # Two whole PATCHes, and every byte of the third that reached the
    # filter: all but the request lines and headers the proxy counted, and
    # the one read (of 64 KiB) that uwsgi's wsgi.input was filling when the
    # connection broke, which it does not hand on.
    assert CUT - 2 * 64 * 1024 < offset <= CUT, offset
    resumed.upload()
    return offset


def test_tuspy_cut_mid_patch_and_resumed(glance, identity, image_file,
                                         proxy):
    """256 MiB in 64 MiB PATCHes, the third cut at 160 MiB by the
    proxy."""
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    cut_upload(proxy, identity, image_file, image_id, 'file')
    assert_active_with(api, image_id)
    assert holding(glance.spool_dir) == []


def test_tuspy_to_stage_then_glance_direct_import(glance, identity,
                                                  image_file, proxy):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    cut_upload(proxy, identity, image_file, image_id, 'stage')
    assert api.get_image(image_id)['status'] == 'uploading'
    resp = api.import_glance_direct(image_id)
    assert resp.status == 202, resp
    api.wait_for_status(image_id, ('active',), timeout=60)
    assert_active_with(api, image_id)


def test_aiotus_four_parallel_partial_uploads_concatenated(glance,
                                                          identity):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    quarter = len(DATA) // 4
    parts = [io.BytesIO(DATA[i * quarter:(i + 1) * quarter])
             for i in range(4)]
    config = aiotus.RetryConfiguration(retry_attempts=1)
    location = asyncio.run(aiotus.upload_multiple(
        '%s/v2/images/%s/file' % (glance.url, image_id), parts,
        metadata={'filename': b'image.raw'}, headers=identity,
        config=config, parallel_uploads=4, chunksize=4 * MiB))
    assert location is not None
    assert_active_with(api, image_id)


def test_another_project_gets_404_and_harms_nothing(glance, identity,
                                                    image_file):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    tus = tus_client.TusClient(
        '%s/v2/images/%s/file' % (glance.url, image_id), headers=identity)
    uploader = tus.uploader(file_path=image_file, chunk_size=CHUNK)
    uploader.upload(stop_at=CHUNK)
    other = client.GlanceClient(glance.url, {
        'X-Auth-Token': glance.tokens[conftest.KEYSTONE_USERS[1]],
        'Tus-Resumable': '1.0.0'})
    upload = urllib.parse.urlsplit(uploader.url).path
    assert other.request('HEAD', upload).status == 404
    assert other.request('PATCH', upload, body=DATA[CHUNK:CHUNK + 10],
                         headers={'Upload-Offset': str(CHUNK),
                                  'Content-Type':
                                      'application/offset+octet-stream'}
                         ).status == 404
    assert other.request('DELETE', upload).status == 404
    resumed = tus.uploader(file_path=image_file, url=uploader.url,
                           chunk_size=CHUNK)
    assert resumed.offset == CHUNK
    resumed.upload()
    assert_active_with(api, image_id)


def test_tuspy_patch_stalled_past_the_server_timeout_keeps_what_arrived(
        glance, identity, image_file, proxy):
    """The third PATCH goes quiet at 160 MiB for longer than uwsgi's socket
    timeout (4 s): the server ends it, keeping what arrived."""
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    tus = tus_client.TusClient(
        '%s/v2/images/%s/file' % (proxy.url, image_id), headers=identity)
    uploader = tus.uploader(file_path=image_file, chunk_size=CHUNK)
    proxy.stall_at(CUT, 6)
    with pytest.raises(tus_exceptions.TusUploadFailed):
        uploader.upload()
    assert proxy.stalled.is_set()
    resumed = tus.uploader(file_path=image_file, url=uploader.url,
                           chunk_size=CHUNK)
    assert 2 * CHUNK < resumed.offset <= CUT, resumed.offset
    resumed.upload()
    assert_active_with(api, image_id)


def test_tuspy_with_checksums_cut_mid_patch_drops_that_patch(
        glance, identity, image_file, proxy):
    """With ``upload_checksum=True`` every PATCH carries ``Upload-Checksum:
    sha1 ...``: the cut one cannot be verified, so none of it is kept."""
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    tus = tus_client.TusClient(
        '%s/v2/images/%s/file' % (proxy.url, image_id), headers=identity)
    uploader = tus.uploader(file_path=image_file, chunk_size=CHUNK,
                            upload_checksum=True)
    proxy.cut_at(CUT)
    with pytest.raises(tus_exceptions.TusUploadFailed):
        uploader.upload()
    resumed = tus.uploader(file_path=image_file, url=uploader.url,
                           chunk_size=CHUNK, upload_checksum=True)
    assert resumed.offset == 2 * CHUNK
    resumed.upload()
    assert_active_with(api, image_id)
