"""A session's phases and actions against a real Glance, and a finalize
that fails for nobody's fault: no byte is thrown away.

Glance 33 under uwsgi (and 30 under eventlet when the run has it), its
filesystem store on a tmpfs this test mounts, so the store can really be
full: Glance answers 413 for the image, the session keeps every byte
(``paused_system``); once the store has room, ``POST .../finalize``
completes the image without a byte sent again. curl sends ranged PUTs
with an RFC 9530 ``Content-Digest`` and drives the actions.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess

import crc32c
import pytest

from tests.functional import client
from tests.functional import conftest
from tests.functional.test_resumable import assert_active_with
from tests.functional.test_resumable import ended
from tests.functional.test_resumable import holding
from tests.functional.test_resumable_faults import DATA
from tests.functional.test_resumable_faults import ROLES
from tests.functional.test_resumable_faults import SERVERS
from tests.functional.test_resumable_faults import N
from tests.functional.test_resumable_faults import put_range
from tests.functional.test_resumable_faults import status

MiB = 1024 * 1024


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """A tmpfs for the store, mounted here and unmounted at the end."""
    path = tmp_path_factory.mktemp('tmpfs-store')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs',
                    str(path)], check=True)
    yield path
    subprocess.run(['umount', '-l', str(path)], check=True)


def resize(store, free):
    """Leave ``free`` bytes free on the store's tmpfs."""
    stat = os.statvfs(store)
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    subprocess.run(['mount', '-o', 'remount,size=%d' % (used + free),
                    str(store)], check=True)


@pytest.fixture(scope='module', params=SERVERS,
                ids=['glance%s-%s' % d for d in SERVERS])
def glance(request, store, tmp_path_factory):
    release, server = request.param
    datadir = store / ('images-%s-%s' % request.param)
    datadir.mkdir()
    workdir = tmp_path_factory.mktemp('phases')
    server = conftest.glance_on(
        release, server, resumable={}, processes=2, threads=4,
        workdir=workdir, backends={'fs': ('file', {
            'filesystem_store_datadir': str(datadir)})})
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def api(glance):
    return client.GlanceClient(glance.url, glance.identity_headers(
        os.urandom(8).hex(), roles=ROLES))


def curl(glance, api, method, path, *args):
    """curl's status and body for one request of the test's caller."""
    argv = ['curl', '-sS', '-o', '-', '-w', '\n%{http_code}', '-X', method,
            '-H', 'Expect:']
    for name, value in api.headers.items():
        argv += ['-H', '%s: %s' % (name, value)]
    out = subprocess.run(argv + list(args) + [glance.url + path],
                         check=True, capture_output=True, text=True).stdout
    body, _, code = out.rpartition('\n')
    return int(code), body


def curl_range(glance, api, image_id, body_file, first, last, digest=None):
    args = ['-H', 'Content-Range: bytes %d-%d/%d' % (first, last, N),
            '-H', 'Content-Type: application/octet-stream',
            '--data-binary', '@%s' % body_file]
    if digest is not None:
        args += ['-H', 'Content-Digest: %s' % digest]
    return curl(glance, api, 'PUT', '/v2/images/%s/file' % image_id, *args)


def crc32c_digest(data):
    return 'crc32c=:%s:' % base64.b64encode(
        crc32c.crc32c(data).to_bytes(4, 'big')).decode()


def action(glance, api, image_id, name):
    code, body = curl(glance, api, 'POST',
                      '/v2/images/%s/file/session/%s' % (image_id, name))
    return code, (json.loads(body) if code == 200 else body)


def test_curl_with_content_digest_pause_resume_finalize(glance, api,
                                                        tmp_path):
    image_id = api.create_image()
    first = tmp_path / 'first'
    first.write_bytes(DATA[:MiB])
    # A digest that is not the body's: 400, nothing counted.
    code, body = curl_range(glance, api, image_id, first, 0, MiB - 1,
                            crc32c_digest(b'other'))
    assert code == 400 and 'digest' in body
    assert status(api, image_id)[1]['bytes_held'] == 0
    code, _ = curl_range(glance, api, image_id, first, 0, MiB - 1,
                         crc32c_digest(DATA[:MiB]))
    assert code == 204
    document = status(api, image_id)[1]
    assert document['pieces'] == [[0, MiB - 1, '%08x' % crc32c.crc32c(
        DATA[:MiB])]]
    # Paused by its owner: a write is refused until resumed.
    code, document = action(glance, api, image_id, 'pause')
    assert code == 200 and document['phase'] == 'paused_user'
    rest = tmp_path / 'rest'
    rest.write_bytes(DATA[MiB:])
    code, body = curl_range(glance, api, image_id, rest, MiB, N - 1)
    assert code == 409 and 'paused' in body
    code, document = action(glance, api, image_id, 'finalize')
    assert code == 409 and 'missing' in document
    assert action(glance, api, image_id, 'resume')[0] == 200
    # The last range completes the image: its answer is Glance's.
    code, _ = curl_range(glance, api, image_id, rest, MiB, N - 1)
    assert code == 204
    assert api.get_image(image_id)['status'] == 'active'
    phases = [phase for phase, _ in status(api, image_id)[1]['phases']]
    assert phases == ['transferring', 'paused_user', 'transferring',
                      'finalizing', 'finished_success']
    assert_active_with(api, image_id, DATA)


def test_a_full_store_keeps_every_byte_and_finalize_finishes(
        glance, api, store):
    image_id = api.create_image()
    resize(store, 2 * MiB)
    try:
        resp = put_range(api, image_id, 0, N - 1)
        # Glance's own answer for a full store.
        assert resp.status == 413, resp
        document = status(api, image_id)[1]
        assert document['phase'] == 'paused_system'
        assert document['bytes_held'] == N
        assert '413' in document['error']
        assert api.get_image(image_id)['status'] == 'queued'
    finally:
        resize(store, 64 * MiB)
    sent = glance.spool_dir
    code, document = action(glance, api, image_id, 'finalize')
    assert code == 200, document
    assert document['phase'] == 'finished_success'
    assert_active_with(api, image_id, DATA)
    assert holding(sent, image_id) == []


def test_an_image_deleted_mid_upload_ends_its_session(glance, api):
    image_id = api.create_image()
    assert put_range(api, image_id, 0, MiB - 1).status == 204
    assert api.request('DELETE', '/v2/images/%s' % image_id).status == 204
    resp = put_range(api, image_id, MiB, 2 * MiB - 1)
    assert resp.status == 404, resp
    assert ended(api, image_id) == 'cancelled_system'
    assert holding(glance.spool_dir, image_id) == []


def test_a_refused_image_ends_finished_failure_and_takes_a_new_upload(
        glance, api):
    image_id = api.create_image(disk_format='qcow2')
    resp = put_range(api, image_id, 0, N - 1)
    assert resp.status == 400, resp
    assert ended(api, image_id) == 'finished_failure'
    assert api.get_image(image_id)['status'] == 'queued'
    # The image takes a new session at once.
    assert put_range(api, image_id, 0, 9).status == 204
    assert status(api, image_id)[1]['phase'] == 'paused_system'
    assert api.request('DELETE', '/v2/images/%s/file/session'
                       % image_id).status == 204


def test_a_sha256_digest_from_curl_too(glance, api, tmp_path):
    image_id = api.create_image()
    body = tmp_path / 'body'
    body.write_bytes(DATA[:MiB])
    digest = 'sha-256=:%s:' % base64.b64encode(
        hashlib.sha256(DATA[:MiB]).digest()).decode()
    code, _ = curl_range(glance, api, image_id, body, 0, MiB - 1, digest)
    assert code == 204
    assert status(api, image_id)[1]['bytes_held'] == MiB
    assert api.request('DELETE', '/v2/images/%s/file/session'
                       % image_id).status == 204
