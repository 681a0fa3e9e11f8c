"""Store-native sessions on a real Ceph: the bytes go straight into the RBD
image the image will live in, and Glance gets only the location.

Glance 33 and 29 under uwsgi and 30 under eventlet (those the run has),
each with its only backend on RBD pool ``images`` and the resumable
filter's default ``session_storage = store``. Each test checks the
cluster itself (``rbd`` and ``rados`` as admin): the RBD image exists at
the declared size from the first range and the session's ledger beside
it, the API node's spool holds nothing of it, the finished image is
served by glance_store's own driver from the protected snapshot, and
whatever ends a session without an image (a cancel, a refusal, an expiry)
leaves no RBD image in the pool. A location Glance refuses (its policy
says no) keeps every byte, and finalizing again once it says yes makes
the image active with no byte sent again. A worker killed mid-write loses
no acknowledged byte.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.functional import client
from tests.functional import conftest
from tests.functional.test_resumable_faults import SERVERS as FAULT_SERVERS
from tests.functional.test_resumable_faults import wait_for_respawned_workers

MiB = 1024 * 1024
DATA = os.urandom(24 * MiB + 7)
N = len(DATA)
ROLES = ('member', 'reader')
#: Glance 33 under uwsgi, 30 under eventlet, and 29 (2024.2, the first
#: release with the location API) under uwsgi and eventlet, when the run
#: has them.
SERVERS = FAULT_SERVERS + (
    [('29', 'uwsgi')] if '29' in conftest.RELEASES else []) + (
    [('29', 'eventlet')] if '29' in conftest.EVENTLET_RELEASES else [])


@pytest.fixture(scope='module', params=SERVERS,
                ids=['glance%s-%s' % d for d in SERVERS])
def glance(request, ceph_rbd, tmp_path_factory):
    release, server = request.param
    workdir = tmp_path_factory.mktemp('native')
    glance = conftest.glance_on(
        release, server, resumable={}, processes=2, threads=4,
        workdir=workdir, default_backend='ceph',
        policy={'add_image_location': '', 'context_is_admin': 'role:admin'},
        backends={'ceph': ('rbd', {
            'rbd_store_pool': ceph_rbd.name,
            'rbd_store_user': ceph_rbd.user,
            'rbd_store_ceph_conf': ceph_rbd.conf_path,
            'rbd_store_chunk_size': 8})})
    glance.start()
    yield glance
    glance.stop()


@pytest.fixture
def api(glance):
    return client.GlanceClient(glance.url, glance.identity_headers(
        uuid.uuid4().hex, roles=ROLES))


def put_range(api, image_id, first, last, data=DATA, timeout=120):
    """One ranged PUT of bytes ``first`` to ``last`` of ``data``."""
    return api.request('PUT', '/v2/images/%s/file' % image_id,
                       body=data[first:last + 1], timeout=timeout,
                       headers={'Content-Range': 'bytes %d-%d/%d' % (
                           first, last, len(data)),
                           'Content-Type': 'application/octet-stream'})


def slow_curl(url, api, image_id, data, first, path):
    """curl sending bytes ``first`` on of ``data`` (from file ``path``) as
    one ranged PUT at 2 MiB/s, in the background: a request to cut."""
    path.write_bytes(data[first:])
    argv = ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}',
            '-X', 'PUT', '-H', 'Expect:', '--limit-rate', '2M',
            '-H', 'Content-Range: bytes %d-%d/%d' % (first, len(data) - 1,
                                                   len(data)),
            '-H', 'Content-Type: application/octet-stream']
    for name, value in api.headers.items():
        argv += ['-H', '%s: %s' % (name, value)]
    return subprocess.Popen(argv + ['-T', str(path), url
                                    + '/v2/images/%s/file' % image_id],
                            stdout=subprocess.PIPE, text=True)


def wait_for_lease(ceph_rbd, image_id, timeout=10):
    """Until a request holds bytes of the session (a writer's lease)."""
    deadline = time.monotonic() + timeout
    while not any(k.startswith('w.')
                  for k in ledger(ceph_rbd, image_id) or ()):
        assert time.monotonic() < deadline, 'no writer lease'
        time.sleep(0.05)


def session(api, image_id):
    resp = api.request('GET', '/v2/images/%s/file/session' % image_id)
    assert resp.status == 200, resp
    return resp.json()


def rbd_info(ceph_rbd, name):
    """``rbd info`` of an image of the pool, or None."""
    if name not in ceph_rbd.images():
        return None
    info = json.loads(ceph_rbd.cluster.rbd(
        'info', '--pool', ceph_rbd.name, name, '--format', 'json'))
    snaps = json.loads(ceph_rbd.cluster.rbd(
        'snap', 'ls', '--pool', ceph_rbd.name, name, '--format', 'json'))
    info['snaps'] = {s['name']: s for s in snaps}
    return info


def ledger(ceph_rbd, image_id):
    """The omap keys of a session's ledger object in the pool, or
    None."""
    argv = ['rados', '--conf', str(ceph_rbd.conf_path), '--name',
            'client.admin', '--pool', ceph_rbd.name, 'listomapkeys',
            'sizeaware.session.%s' % image_id]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        assert 'No such file' in out.stderr, out.stderr
        return None
    return set(out.stdout.split())


def workers(glance):
    """The PIDs of the Glance API's workers (the master's children)."""
    master = glance.pids['glance']
    with open('/proc/%d/task/%d/children' % (master, master)) as f:
        return [int(pid) for pid in f.read().split()]


def wait_hashed(api, image_id, timeout=60):
    """Glance's location_import task computes the hashes after the image
    turned active."""
    deadline = time.monotonic() + timeout
    while True:
        image = api.get_image(image_id)
        if image.get('os_hash_value') or time.monotonic() > deadline:
            return image
        time.sleep(0.2)


def test_ranges_go_straight_into_the_rbd_image(glance, api, ceph_rbd):
    image_id = api.create_image()
    third = N // 3
    resp = put_range(api, image_id, third, 2 * third - 1)
    assert resp.status == 204, resp
    # The RBD image exists at its full size from the first range, and the
    # spool holds none of its bytes.
    info = rbd_info(ceph_rbd, image_id)
    assert info['size'] == N and not info['snaps']
    # The session is kept in the cluster, beside the RBD image: the API
    # node's spool holds nothing of it.
    assert list(glance.spool_dir.glob('%s*' % image_id)) == []
    keys = ledger(ceph_rbd, image_id)
    assert 'record' in keys and len([k for k in keys
                                     if k.startswith('p.')]) >= 1
    doc = session(api, image_id)
    assert doc['phase'] == 'paused_system'
    assert doc['ranges_held'] == [[third, 2 * third - 1]]
    assert put_range(api, image_id, 0, third - 1).status == 204
    resp = put_range(api, image_id, 2 * third, N - 1)
    # Glance's own answer to an upload: 204, the image active now.
    assert resp.status == 204, resp
    image = api.get_image(image_id)
    assert image['status'] == 'active' and image['size'] == N
    assert session(api, image_id)['phase'] == 'finished_success'
    info = rbd_info(ceph_rbd, image_id)
    assert info['size'] == N and info['snaps']['snap']['protected'] == 'true'
    # The features glance_store's driver gives its images, the exclusive
    # lock included (off while several writers shared the image).
    assert {'layering', 'exclusive-lock'} <= set(info['features'])
    image = wait_hashed(api, image_id)
    assert image['os_hash_algo'] == 'sha512'
    assert image['os_hash_value'] == hashlib.sha512(DATA).hexdigest()
    assert image['checksum'] == hashlib.md5(DATA).hexdigest()
    # glance_store's RBD driver serves it, whole and in ranges, and
    # deletes it with the image.
    assert api.request('GET', '/v2/images/%s/file' % image_id).body == DATA
    assert api.request('DELETE', '/v2/images/%s' % image_id).status == 204
    assert rbd_info(ceph_rbd, image_id) is None


def test_tuspy_writes_into_the_store(glance, api, ceph_rbd, tmp_path):
    from tusclient import client as tus_client
    image_id = api.create_image()
    path = tmp_path / 'image'
    path.write_bytes(DATA)
    tus = tus_client.TusClient(glance.url + '/v2/images/%s/file' % image_id,
                               headers=dict(api.headers))
    tus.uploader(str(path), chunk_size=4 * MiB).upload()
    image = api.get_image(image_id)
    assert image['status'] == 'active' and image['size'] == N
    assert rbd_info(ceph_rbd, image_id)['snaps']['snap']
    assert api.request('GET', '/v2/images/%s/file' % image_id).body == DATA


def test_a_store_glance_does_not_have_is_400(glance, api, ceph_rbd):
    image_id = api.create_image()
    resp = api.request('PUT', '/v2/images/%s/file' % image_id,
                       body=DATA[:MiB], headers={
                           'Content-Range': 'bytes 0-%d/%d' % (MiB - 1, N),
                           'Content-Type': 'application/octet-stream',
                           'X-Image-Meta-Store': 'nowhere'})
    assert resp.status == 400 and 'nowhere' in resp.text, resp
    assert rbd_info(ceph_rbd, image_id) is None
    resp = api.request('GET', '/v2/images/%s/file/session' % image_id)
    assert resp.status == 404


def test_a_cancel_leaves_nothing_in_the_pool(glance, api, ceph_rbd):
    image_id = api.create_image()
    assert put_range(api, image_id, 0, MiB - 1).status == 204
    assert rbd_info(ceph_rbd, image_id)['size'] == N
    resp = api.request('DELETE', '/v2/images/%s/file/session' % image_id)
    assert resp.status == 204, resp
    assert rbd_info(ceph_rbd, image_id) is None
    assert api.get_image(image_id)['status'] == 'queued'


def test_refused_data_leaves_nothing_in_the_pool(glance, api, ceph_rbd):
    # Raw bytes for an image that says qcow2: refused before Glance sees
    # the location.
    image_id = api.create_image(disk_format='qcow2')
    assert put_range(api, image_id, 0, N // 2).status == 204
    resp = put_range(api, image_id, N // 2 + 1, N - 1)
    assert resp.status == 400 and 'qcow2' in resp.text, resp
    doc = session(api, image_id)
    assert doc['phase'] == 'finished_failure'
    assert rbd_info(ceph_rbd, image_id) is None
    assert api.get_image(image_id)['status'] == 'queued'


def test_a_location_glance_refuses_keeps_every_byte(glance, api, ceph_rbd):
    policy = json.loads(glance.policy_path.read_text())
    image_id = api.create_image()
    try:
        glance.policy_path.write_text(json.dumps(
            dict(policy, add_image_location='!')))
        assert put_range(api, image_id, 0, N // 2).status == 204
        resp = put_range(api, image_id, N // 2 + 1, N - 1)
        assert resp.status == 503 and '403' in resp.text, resp
        doc = session(api, image_id)
        assert doc['phase'] == 'paused_system' and '403' in doc['error']
        assert doc['bytes_held'] == N
        # The bytes stay in the pool, the snapshot made for Glance too.
        assert rbd_info(ceph_rbd, image_id)['size'] == N
    finally:
        glance.policy_path.write_text(json.dumps(policy))
    resp = api.request('POST',
                       '/v2/images/%s/file/session/finalize' % image_id)
    assert resp.status == 200, resp
    assert resp.json()['phase'] == 'finished_success'
    image = api.get_image(image_id)
    assert image['status'] == 'active' and image['size'] == N
    assert api.request('GET', '/v2/images/%s/file' % image_id).body == DATA


def test_a_killed_worker_loses_no_acknowledged_byte(glance, api, ceph_rbd,
                                                    tmp_path):
    """Every worker of the node is SIGKILLed while curl sends the second
    range (uwsgi's master, or eventlet glance-api's parent, respawns
    them): the first (acknowledged) stays held, nothing of the cut one is
    counted, and once the killed writer's lease lapsed the range is sent
    again and the image is exact."""
    image_id = api.create_image()
    half = 12 * MiB
    assert put_range(api, image_id, 0, half - 1).status == 204
    cut = slow_curl(glance.url, api, image_id, DATA, half,
                    tmp_path / 'rest')
    wait_for_lease(ceph_rbd, image_id)
    time.sleep(1)
    for pid in workers(glance):
        os.kill(pid, signal.SIGKILL)
    assert cut.communicate()[0] != '204'
    wait_for_respawned_workers(glance)
    glance.wait_for_http(glance.url + '/versions', 30, ok=(200, 300))
    doc = session(api, image_id)
    assert doc['ranges_held'] == [[0, half - 1]], doc
    # The dead writer's lease holds its bytes a moment; then they go.
    deadline = time.monotonic() + 30
    while True:
        resp = put_range(api, image_id, half, N - 1)
        if resp.status != 409 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert resp.status == 204, resp
    assert api.request('GET', '/v2/images/%s/file' % image_id).body == DATA


def test_an_expired_session_leaves_nothing(ceph_rbd, tmp_path_factory):
    """An expired store-native session is ended by the sweep of any node,
    one that never saw it included, and its RBD image and pieces go; only
    its record stays (for the retention time). The image takes a new
    upload at once."""
    def node(name):
        return conftest.glance_on(
            '33', 'uwsgi', resumable={'session_inactivity_timeout': 2},
            workdir=tmp_path_factory.mktemp(name), default_backend='ceph',
            backends={'ceph': ('rbd', {
                'rbd_store_pool': ceph_rbd.name,
                'rbd_store_user': ceph_rbd.user,
                'rbd_store_ceph_conf': ceph_rbd.conf_path})})
    with node('native-expiry') as glance:
        api = client.GlanceClient(glance.url, glance.identity_headers(
            uuid.uuid4().hex, roles=ROLES))
        image_id = api.create_image()
        assert put_range(api, image_id, 0, MiB - 1).status == 204
        assert rbd_info(ceph_rbd, image_id)['size'] == N
        time.sleep(2.5)
        # Another node (its own database: it knows nothing of the image)
        # sweeps on its first resumable request, whatever it is about.
        with node('native-sweeper') as other:
            stranger = client.GlanceClient(other.url, other.identity_headers(
                uuid.uuid4().hex, roles=ROLES))
            resp = stranger.request('GET', '/v2/images/%s/file/session'
                                    % uuid.uuid4())
            assert resp.status == 404
        assert rbd_info(ceph_rbd, image_id) is None
        assert ledger(ceph_rbd, image_id) == {'record'}
        assert session(api, image_id)['phase'] == 'cancelled_system'
        assert api.get_image(image_id)['status'] == 'queued'
        assert put_range(api, image_id, 0, MiB - 1).status == 204
        assert session(api, image_id)['phase'] == 'paused_system'
