"""Resumable uploads' faults and refusals against a real Glance.

Glance 33 under uwsgi (two processes, one spool) with ``... context
resumable sizeaware rootapp``, identity from headers, and a small
``spool_max_bytes``. Each test proves one of:

* a uwsgi worker killed (SIGKILL) mid-``PATCH`` and mid-ranged-``PUT``,
  then the same Glance stopped and started again on the same spool,
  store and database: unmodified clients (tuspy ``Uploader(url=...)``,
  curl) resume, every acknowledged byte is still counted, no byte that is
  not on disk is counted, and the image ends ``active`` with its sha256;
* each refusal of the two protocols' contracts (a full spool, an expired
  session, a wrong tus offset, a tus checksum mismatch, an overlapping
  range with other bytes, a second writer to the same bytes, a body past
  the declared length) gets its 4xx and leaves the session as it was
  (tus ``HEAD`` and the status document agree with the spool);
* finalize refuses a qcow2 with a backing file and data whose format is
  not the image's ``disk_format``: 400, the image still ``queued``,
  nothing in the store, the session ``failed`` with the reason.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest
from tusclient import client as tus_client

from tests.functional import client
from tests.functional import conftest
from tests.functional import faultproxy
from tests.functional import procfs
from tests.functional.test_resumable import assert_active_with
from tests.functional.test_resumable import ended
from tests.functional.test_resumable import holding
from tests.functional.test_size_filter import assert_untouched
from teststack import glance as glance_stack

MiB = 1024 * 1024
DATA = os.urandom(4 * MiB + 5)
N = len(DATA)
SHA256 = hashlib.sha256(DATA).hexdigest()
#: tuspy's PATCH size in the kill test: one whole PATCH is acknowledged
#: before the worker is killed in the second.
CHUNK = 1 * MiB
#: The spool holds at most this many bytes of sessions in progress.
SPOOL_MAX = 24 * MiB
ROLES = ('member', 'reader')
TUS = {'Tus-Resumable': '1.0.0'}
OCTETS = {'Content-Type': 'application/offset+octet-stream'}
#: ``(release, server)``: Glance 33 under uwsgi, and 30 under its own
#: eventlet server when the run has it (the two hand bodies to the filter
#: differently, and kill and respawn workers differently).
SERVERS = [('33', 'uwsgi')] + (
    [('30', 'eventlet')] if '30' in conftest.EVENTLET_RELEASES else [])


@pytest.fixture(scope='module', params=SERVERS,
                ids=['glance%s-%s' % d for d in SERVERS])
def glance(request, tmp_path_factory):
    release, server = request.param
    # A work directory of the test's, so a stop keeps spool, store and
    # database for the start after it.
    workdir = tmp_path_factory.mktemp('faults')
    server = conftest.glance_on(
        release, server, resumable={'spool_max_bytes': SPOOL_MAX},
        processes=2, threads=4, workdir=workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    return conftest.write_image(tmp_path_factory, 'faults-data', DATA)


@pytest.fixture
def api(glance):
    return client.GlanceClient(glance.url, glance.identity_headers(
        uuid.uuid4().hex, roles=ROLES))


# -- helpers ------------------------------------------------------------------


def session_dir(glance, image_id):
    return glance.spool_dir / ('%s.file' % image_id)


def status(api, image_id):
    resp = api.request('GET', '/v2/images/%s/file/session' % image_id)
    return resp.status, (resp.json() if resp.status == 200 else None)


def create_tus(api, image_id, size=N):
    resp = api.request('POST', '/v2/images/%s/file' % image_id,
                       headers=dict(TUS, **{'Upload-Length': str(size)}))
    assert resp.status == 201, resp
    return urllib.parse.urlsplit(resp.headers['location']).path


def tus_patch(api, upload, offset, body, **extra):
    return api.request('PATCH', upload, body=body, headers=dict(
        TUS, **OCTETS, **{'Upload-Offset': str(offset)}, **extra))


def tus_offset(api, upload):
    resp = api.request('HEAD', upload, headers=TUS)
    assert resp.status == 200, resp
    assert resp.headers['upload-length'] == str(N)
    return int(resp.headers['upload-offset'])


def put_range(api, image_id, first, last, body=None, **kwargs):
    if body is None:
        body = DATA[first:last + 1]
    return api.request('PUT', '/v2/images/%s/file' % image_id, body=body,
                       headers={'Content-Range': 'bytes %d-%d/%d' % (
                           first, last, N),
                           'Content-Type': 'application/octet-stream'},
                       **kwargs)


def cancel(api, upload):
    """DELETE the upload, so the spool room it reserves is free again."""
    assert api.request('DELETE', upload, headers=TUS).status == 204


def held(document):
    return [tuple(r) for r in document['ranges_held']]


def assert_on_disk(glance, image_id, ranges):
    """Every byte the session counts is in its data file, and right."""
    on_disk = (session_dir(glance, image_id) / 'data').read_bytes()
    for first, last in ranges:
        assert on_disk[first:last + 1] == DATA[first:last + 1], (first, last)


def assert_consistent(api, glance, image_id, upload, expected):
    """The tus offset, the status document and the spool agree: the
    upload holds exactly ``[0, expected)``."""
    assert tus_offset(api, upload) == expected
    code, document = status(api, image_id)
    assert code == 200
    assert document['phase'] == 'paused_system', document
    assert held(document) == ([(0, expected - 1)] if expected else [])
    assert document['bytes_held'] == expected
    assert_on_disk(glance, image_id, held(document))


def wait_for_writer(path, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = procfs.pids_with_open(path)
        if pids:
            return pids
        time.sleep(0.05)
    raise AssertionError('no process has %s open' % path)


def wait_for_respawned_workers(glance, timeout=30):
    """Under uwsgi, wait until every worker the master (re)spawned has
    loaded Glance (``lazy-apps``): one still loading misses the master's
    SIGTERM and holds a stop up until it is SIGKILLed."""
    if glance.wsgi_server != 'uwsgi':
        return
    log = glance.workdir / 'glance.log'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors='replace')
        # "spawned" also counts the master's "Respawned uWSGI worker".
        if text.count("WSGI app 0 (mountpoint=") >= text.count(
                'spawned uWSGI worker'):
            return
        time.sleep(0.1)
    raise AssertionError('uwsgi workers still loading after %d s' % timeout)


def curl_range(glance, headers, image_id, body_file, first, last, rate):
    argv = ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}',
            '-X', 'PUT', '-H', 'Expect:', '--limit-rate', rate,
            '-H', 'Content-Range: bytes %d-%d/%d' % (first, last, N),
            '-H', 'Content-Type: application/octet-stream']
    for name, value in headers.items():
        argv += ['-H', '%s: %s' % (name, value)]
    argv += ['-T', str(body_file), glance.url + '/v2/images/%s/file'
             % image_id]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


# -- 1. a worker killed mid-write, then the server restarted -----------------


def test_worker_killed_mid_patch_and_mid_put_then_server_restarted(
        glance, api, image_file, tmp_path):
    """Kill the worker writing a tus PATCH, then the one writing a ranged
    PUT (uwsgi's master, or eventlet glance-api's parent, respawns each),
    then stop Glance and start it again on the same port, spool, store and
    database; both uploads resume with unmodified clients and lose no
    acknowledged byte."""
    # tus, with tuspy through a proxy that goes quiet mid-way through the
    # third PATCH, while the worker is killed.
    tus_image = api.create_image()
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        tus = tus_client.TusClient('%s/v2/images/%s/file' % (
            proxy.url, tus_image), headers=api.headers)
        uploader = tus.uploader(file_path=image_file, chunk_size=CHUNK)
        uploader.upload(stop_at=2 * CHUNK)
        acknowledged_tus = uploader.offset
        assert acknowledged_tus == 2 * CHUNK
        proxy.stall_at(CHUNK // 2, 30)
        failed = []

        def send():
            try:
                uploader.upload()
            except Exception as exc:  # the connection dies with the worker
                failed.append(exc)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert proxy.stalled.wait(10)
        data_file = session_dir(glance, tus_image) / 'data'
        (worker,) = wait_for_writer(data_file)
        time.sleep(0.5)   # what arrived is in the spool
        assert worker not in glance.pids.values()
        os.kill(worker, signal.SIGKILL)
    sender.join(30)
    assert failed and not sender.is_alive()

    # Ranged PUT, with curl slowed down, its worker killed mid-write.
    put_image = api.create_image()
    assert put_range(api, put_image, 3 * MiB, N - 1).status == 204
    body_file = tmp_path / 'first'
    body_file.write_bytes(DATA[:3 * MiB])
    cut = curl_range(glance, api.headers, put_image, body_file, 0,
                     3 * MiB - 1, '512k')
    data_file = session_dir(glance, put_image) / 'data'
    time.sleep(1.5)
    (worker,) = wait_for_writer(data_file)
    os.kill(worker, signal.SIGKILL)
    assert cut.communicate()[0] != '204'

    # The same Glance stopped and started again: same port, spool,
    # store and database.
    wait_for_respawned_workers(glance)
    started = time.monotonic()
    glance.stop()
    assert time.monotonic() - started < 10   # stopped, not SIGKILLed
    assert not procfs.pids_with_open(data_file)
    glance.start()

    # tus: tuspy resumes from its URL; its HEAD reports every
    # acknowledged byte and none past what the spool holds.
    resumed = tus.uploader(file_path=image_file, url=uploader.url.replace(
        proxy.url, glance.url), chunk_size=CHUNK)
    offset = resumed.offset
    assert acknowledged_tus < offset <= 2 * CHUNK + CHUNK // 2, offset
    assert_on_disk(glance, tus_image, [(0, offset - 1)])
    resumed.upload()
    assert_active_with(api, tus_image, DATA)

    # Ranged PUT: the status document lists the acknowledged last range
    # and the prefix of the first that reached the spool.
    code, document = status(api, put_image)
    assert code == 200 and document['phase'] == 'paused_system', document
    (first, last) = held(document)
    assert last == (3 * MiB, N - 1)
    assert first[0] == 0 and 0 < first[1] < 3 * MiB - 1, first
    assert document['bytes_held'] == first[1] + 1 + N - 3 * MiB
    assert_on_disk(glance, put_image, held(document))
    rest = tmp_path / 'rest'
    rest.write_bytes(DATA[first[1] + 1:3 * MiB])
    assert curl_range(glance, api.headers, put_image, rest, first[1] + 1,
                      3 * MiB - 1, '100M').communicate()[0] == '204'
    assert_active_with(api, put_image, DATA)
    assert ended(api, put_image) == 'finished_success'


# -- 2. refusals leave the session as it was ---------------------------------


def test_full_spool_is_507_with_a_reason(glance, api):
    image_id = api.create_image()
    upload = create_tus(api, image_id)
    assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
    other = api.create_image()
    too_big = SPOOL_MAX - N + 1
    resp = api.request('POST', '/v2/images/%s/file' % other,
                       headers=dict(TUS, **{'Upload-Length': str(too_big)}))
    assert resp.status == 507, resp
    assert 'spool cannot hold another %d bytes' % too_big in resp.text
    resp = api.request('PUT', '/v2/images/%s/file' % other, body=b'x',
                       headers={'Content-Range': 'bytes 0-0/%d' % too_big})
    assert resp.status == 507, resp
    assert 'spool cannot hold' in resp.text
    assert status(api, other)[0] == 404
    assert not session_dir(glance, other).exists()
    assert_untouched(api, glance, other)
    # The upload in progress is as it was, and finishes.
    assert_consistent(api, glance, image_id, upload, MiB)
    assert tus_patch(api, upload, MiB, DATA[MiB:]).status == 204
    assert_active_with(api, image_id, DATA)


def test_expired_session_is_404_and_reaped(glance, api):
    image_id = api.create_image()
    upload = create_tus(api, image_id)
    assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
    path = session_dir(glance, image_id)
    # The session expires: its record says so, as after
    # session_inactivity_timeout or session_max_age.
    record = json.loads((path / 'record.json').read_text())
    record['expires_at'] = time.time() - 1
    (path / 'record.json').write_text(json.dumps(record))
    # The reaper, run by any request once its interval has passed, ends
    # the session and removes its data; its record stays.
    stamp = glance.spool_dir / '.reaped'
    if stamp.exists():
        os.utime(stamp, (0, 0))
    assert status(api, api.create_image())[0] == 404
    assert sorted(p.name for p in path.iterdir()) == ['lock', 'pieces',
                                                      'record.json']
    assert holding(glance.spool_dir, image_id) == []
    assert api.request('HEAD', upload, headers=TUS).status == 404
    assert tus_patch(api, upload, MiB, DATA[MiB:]).status == 404
    assert ended(api, image_id) == 'cancelled_system'
    assert_untouched(api, glance, image_id)


def test_inactivity_timeout_expires_a_session(tmp_path_factory):
    """The same by the option: ``session_inactivity_timeout`` of 2 s."""
    workdir = tmp_path_factory.mktemp('expiry')
    server = glance_stack.Glance(
        '33', resumable={'session_inactivity_timeout': 2}, workdir=workdir)
    server.start()
    try:
        api = client.GlanceClient(server.url, server.identity_headers(
            uuid.uuid4().hex, roles=ROLES))
        image_id = api.create_image()
        upload = create_tus(api, image_id)
        assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
        assert status(api, image_id)[1]['bytes_held'] == MiB
        time.sleep(2.5)
        # Removed by the reaper (run once its interval has passed) or on
        # sight by the first request for it.
        os.utime(server.spool_dir / '.reaped', (0, 0))
        assert status(api, api.create_image())[0] == 404
        assert holding(server.spool_dir, image_id) == []
        assert api.request('HEAD', upload, headers=TUS).status == 404
        assert tus_patch(api, upload, MiB, DATA[MiB:]).status == 404
        assert ended(api, image_id) == 'cancelled_system'
        assert_untouched(api, server, image_id)
        # The image takes a new upload.
        upload = create_tus(api, image_id)
        assert tus_patch(api, upload, 0, DATA).status == 204
        assert_active_with(api, image_id, DATA)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_wrong_tus_offset_is_409(glance, api):
    image_id = api.create_image()
    upload = create_tus(api, image_id)
    assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
    for offset in (0, MiB - 1, MiB + 1):
        resp = tus_patch(api, upload, offset, DATA[offset:offset + 1000])
        assert resp.status == 409, resp
        assert 'differs from the upload\'s offset %d' % MiB in resp.text
    assert_consistent(api, glance, image_id, upload, MiB)
    cancel(api, upload)


def test_tus_checksum_mismatch_is_460_and_keeps_nothing(glance, api):
    image_id = api.create_image()
    upload = create_tus(api, image_id)
    assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
    wrong = 'sha1 ' + base64.b64encode(
        hashlib.sha1(b'other').digest()).decode()
    resp = tus_patch(api, upload, MiB, DATA[MiB:2 * MiB],
                     **{'Upload-Checksum': wrong})
    assert resp.status == 460, resp
    assert_consistent(api, glance, image_id, upload, MiB)
    assert not [p for p in session_dir(glance, image_id).iterdir()
                if p.name.startswith('journal.')]
    cancel(api, upload)


def test_overlapping_range_with_other_bytes_is_409(glance, api):
    image_id = api.create_image()
    assert put_range(api, image_id, 0, MiB - 1).status == 204
    other = bytes(b ^ 0xff for b in DATA[MiB - 100:MiB + 100])
    resp = put_range(api, image_id, MiB - 100, MiB + 99, body=other)
    assert resp.status == 409, resp
    assert 'differ from the bytes already received' in resp.text
    code, document = status(api, image_id)
    assert held(document) == [(0, MiB - 1)]
    assert document['phase'] == 'paused_system'
    assert_on_disk(glance, image_id, held(document))
    # The same bytes overlap fine.
    assert put_range(api, image_id, MiB - 100, N - 1).status == 204
    assert_active_with(api, image_id, DATA)


def test_second_writer_to_the_same_bytes_is_409(glance, api, tmp_path):
    image_id = api.create_image()
    body_file = tmp_path / 'all'
    body_file.write_bytes(DATA)
    slow = curl_range(glance, api.headers, image_id, body_file, 0, N - 1,
                      '2M')
    wait_for_writer(session_dir(glance, image_id) / 'data')
    resp = put_range(api, image_id, 2 * MiB, 2 * MiB + 9)
    assert resp.status == 409, resp
    assert 'Another request is writing' in resp.text
    assert slow.communicate()[0] == '204'
    assert_active_with(api, image_id, DATA)
    # tus: a second PATCH while the first is being sent.
    image_id = api.create_image()
    upload = create_tus(api, image_id)
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        proxy.stall_at(MiB // 2, 3)
        slow_api = client.GlanceClient(proxy.url, api.headers)
        first = []
        sender = threading.Thread(target=lambda: first.append(
            tus_patch(slow_api, upload, 0, DATA[:MiB])))
        sender.start()
        assert proxy.stalled.wait(10)
        # The stall is at the proxy: make sure the first PATCH is being
        # written (a worker has taken it) before the second one comes.
        wait_for_writer(session_dir(glance, image_id) / 'data')
        resp = tus_patch(api, upload, 0, DATA[:MiB])
        assert resp.status in (409, 423), resp
        sender.join(30)
    assert first[0].status == 204, first
    assert_consistent(api, glance, image_id, upload, MiB)
    cancel(api, upload)


def test_body_past_the_declared_length(glance, api):
    image_id = api.create_image()
    upload = create_tus(api, image_id)
    assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
    # tus: 413, by Content-Length and by a chunked body that goes on.
    resp = tus_patch(api, upload, MiB, DATA[MiB:] + b'x')
    assert resp.status == 413, resp
    pieces = [DATA[i:i + 65536] for i in range(MiB, N, 65536)] + [b'xyz']
    resp = api.request('PATCH', upload, body=pieces, chunked=True,
                       headers=dict(TUS, **OCTETS, **{
                           'Upload-Offset': str(MiB)}))
    assert resp.status == 413, resp
    assert_consistent(api, glance, image_id, upload, MiB)
    # Ranged PUT: 400, by Content-Length and by a chunked body.
    put_image = api.create_image()
    assert put_range(api, put_image, 0, MiB - 1).status == 204
    resp = put_range(api, put_image, MiB, 2 * MiB - 1,
                     body=DATA[MiB:2 * MiB + 1])
    assert resp.status == 400, resp
    resp = api.request('PUT', '/v2/images/%s/file' % put_image, body=[
        DATA[MiB:2 * MiB], b'x'], chunked=True, headers={
        'Content-Range': 'bytes %d-%d/%d' % (MiB, 2 * MiB - 1, N)})
    assert resp.status == 400, resp
    code, document = status(api, put_image)
    assert held(document) == [(0, MiB - 1)]
    assert_on_disk(glance, put_image, held(document))
    # Both finish.
    assert tus_patch(api, upload, MiB, DATA[MiB:]).status == 204
    assert_active_with(api, image_id, DATA)
    assert put_range(api, put_image, MiB, N - 1).status == 204
    assert_active_with(api, put_image, DATA)


# -- 3. finalize refuses unsafe or mismatched images -------------------------


def test_qcow2_with_a_backing_file_is_refused(glance, api,
                                              qcow2_with_backing):
    assert_qcow2_refused(glance, api, qcow2_with_backing)


def assert_qcow2_refused(glance, api, data):
    """A qcow2 with a backing file sent in one range: 400 with the
    reason, the image untouched, the session failed and holding nothing."""
    image_id = api.create_image(disk_format='qcow2')
    resp = api.request('PUT', '/v2/images/%s/file' % image_id, body=data,
                       headers={'Content-Range': 'bytes 0-%d/%d' % (
                           len(data) - 1, len(data))})
    assert resp.status == 400, resp
    assert 'qcow2 image fails safety checks' in resp.text
    assert 'backing' in resp.text
    assert_untouched(api, glance, image_id)
    code, document = status(api, image_id)
    assert code == 200
    assert document['phase'] == 'finished_failure'
    assert 'safety checks' in document['error']
    assert document['bytes_held'] == 0, document


def test_raw_data_for_a_qcow2_image_is_refused(glance, api):
    image_id = api.create_image(disk_format='qcow2')
    upload = create_tus(api, image_id)
    assert tus_patch(api, upload, 0, DATA[:MiB]).status == 204
    resp = tus_patch(api, upload, MiB, DATA[MiB:])
    assert resp.status == 400, resp
    assert "format raw, but the image's disk_format is qcow2" in resp.text
    assert_untouched(api, glance, image_id)
    code, document = status(api, image_id)
    assert code == 200
    assert document['phase'] == 'finished_failure'
    assert 'disk_format is qcow2' in document['error']
    # The data is gone: nothing counted that is not on disk.
    assert document['bytes_held'] == 0, document
    resp = api.request('HEAD', upload, headers=TUS)
    assert resp.headers.get('upload-offset') != str(N), resp
    # The upload ended: its URL is gone, and the image takes a new one.
    assert api.request('DELETE', upload, headers=TUS).status == 404
    assert holding(glance.spool_dir, image_id) == []
    assert_untouched(api, glance, image_id)

