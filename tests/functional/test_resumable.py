"""Resumable uploads against a real Glance, driven by curl.

Every Glance the suite knows (``SIZEAWARE_GLANCE_RELEASES`` under uwsgi,
``SIZEAWARE_EVENTLET_RELEASES`` under their own eventlet server), each
with two processes sharing one spool directory and ``... context
resumable sizeaware rootapp``; identity from headers, for plain project
users. Then Glance 33 behind the run's keystone, with real tokens of two
projects' users; and two Glance API servers on one spool directory and one
PostgreSQL database behind a round-robin proxy, one of whose workers is
killed mid-write. curl, an
unmodified client, sends each range as an ordinary ``PUT`` with
``Content-Range``; a range cut mid-way is a curl killed while it sends,
slowed down by ``--limit-rate``.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
import types
import urllib.parse
import uuid

import pytest
from tusclient import client as tus_client
from tusclient import exceptions as tus_exceptions

from sizeaware.sessions.storage import spool as spools
from tests.functional import client
from tests.functional import conftest
from tests.functional import faultproxy
from tests.functional import procfs
from teststack import glance as glance_stack

DATA = os.urandom(4 * 1024 * 1024 + 5)
N = len(DATA)
SHA256 = hashlib.sha256(DATA).hexdigest()
ROLES = ('member', 'reader')
MiB = 1024 * 1024
#: ``(release, server)``: Glance 33 first, as before.
SERVERS = sorted({(r, 'uwsgi') for r in conftest.RELEASES} |
                 {(r, 'eventlet') for r in conftest.EVENTLET_RELEASES},
                 key=lambda d: (d[0] != '33', d[1] != 'uwsgi', d))


@pytest.fixture(scope='module', params=SERVERS,
                ids=['glance%s-%s' % d for d in SERVERS])
def glance(request):
    release, server = request.param
    glance = conftest.glance_on(release, server, resumable={}, processes=2,
                                threads=4)
    glance.start()
    yield glance
    glance.stop()


@pytest.fixture
def identity(glance):
    return glance.identity_headers(uuid.uuid4().hex, roles=ROLES)


def quarters():
    q = N // 4
    return [(0, q - 1), (q, 2 * q - 1), (2 * q, 3 * q - 1), (3 * q, N - 1)]


def curl(glance, headers, method, path, body_file=None, rate=None):
    """A curl command line; its output is the status code."""
    argv = ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}',
            '-X', method, '-H', 'Expect:']
    for name, value in headers.items():
        argv += ['-H', '%s: %s' % (name, value)]
    if body_file is not None:
        argv += ['-T', str(body_file)]
    if rate is not None:
        argv += ['--limit-rate', rate]
    return argv + [glance.url + path]


def put_range(glance, headers, image_id, tmp_path, first, last, **kwargs):
    return subprocess.Popen(curl(
        glance, dict(headers, **{
            'Content-Range': 'bytes %d-%d/%d' % (first, last, N),
            'Content-Type': 'application/octet-stream'}),
        'PUT', '/v2/images/%s/file' % image_id,
        body_file=_piece(tmp_path, first, last), **kwargs),
        stdout=subprocess.PIPE, text=True)


def _piece(tmp_path, first, last):
    path = tmp_path / ('%d-%d' % (first, last))
    path.write_bytes(DATA[first:last + 1])
    return path


def status(api, image_id):
    resp = api.request('GET', '/v2/images/%s/file/session' % image_id)
    return resp.status, (resp.json() if resp.status == 200 else None)


def ended(api, image_id, target='file'):
    """The phase a session ended in, from the status document its owner
    still reads, which holds no byte any more."""
    resp = api.request('GET', '/v2/images/%s/%s/session' % (image_id,
                                                              target))
    assert resp.status == 200, resp
    document = resp.json()
    assert document['bytes_held'] == 0 and document['pieces'] == []
    assert document['expires_at'] is None
    return document['phase']


def holding(spool_dir, name=''):
    """The sessions in a spool that still hold data (an ended one keeps
    its record alone, for its status document)."""
    return [p.name for p in spool_dir.iterdir()
            if not p.name.startswith('.') and name in p.name
            and {'data', 'part.0'} & {q.name for q in p.iterdir()}]


def assert_active_with(api, image_id, data):
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['size'] == len(data)
    body = api.download(image_id).body
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(
        data).hexdigest()


def test_quarters_2_4_1_3_one_cut_and_resent(glance, identity, tmp_path):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    parts = quarters()
    for index in (1, 3):
        assert put_range(glance, identity, image_id, tmp_path,
                         *parts[index]).communicate()[0] == '204'
    # Quarter 1, cut mid-way: curl killed while it sends.
    cut = put_range(glance, identity, image_id, tmp_path, *parts[0],
                    rate='256k')
    time.sleep(1.5)
    cut.kill()
    cut.wait()
    deadline = time.monotonic() + 10
    while True:
        code, document = status(api, image_id)
        assert code == 200
        if document['phase'] == 'paused_system' or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    held = [tuple(r) for r in document['ranges_held']]
    assert document['phase'] == 'paused_system'
    # Quarter 1 kept what arrived before the cut: a prefix, no more.
    (first_held, second, fourth) = held
    assert first_held[0] == 0 and 0 < first_held[1] < parts[0][1], held
    assert (second, fourth) == (parts[1], parts[3])
    assert document['bytes_held'] == sum(e - s + 1 for s, e in held)
    assert api.get_image(image_id)['status'] == 'queued'
    # Quarter 3, then what quarter 1 misses.
    assert put_range(glance, identity, image_id, tmp_path,
                     *parts[2]).communicate()[0] == '204'
    assert put_range(glance, identity, image_id, tmp_path,
                     first_held[1] + 1, parts[0][1]).communicate()[0] == '204'
    assert_active_with(api, image_id, DATA)
    assert ended(api, image_id) == 'finished_success'
    assert holding(glance.spool_dir) == []


def test_tuspy_cut_mid_patch_and_resumed(glance, identity, tmp_path):
    """tus on every server: tuspy in 1 MiB PATCHes, cut by the proxy in the
    third, resumed by a new ``Uploader(url=...)``."""
    image_file = tmp_path / 'image.raw'
    image_file.write_bytes(DATA)
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        tus = tus_client.TusClient('%s/v2/images/%s/file' % (
            proxy.url, image_id), headers=identity)
        uploader = tus.uploader(file_path=str(image_file), chunk_size=MiB)
        proxy.cut_at(2 * MiB + MiB // 2)
        with pytest.raises(tus_exceptions.TusUploadFailed):
            uploader.upload()
        # A HEAD that reaches the server before the cut PATCH does (a
        # loaded machine) learns 2 MiB, and the next PATCH gets 409 once
        # that PATCH has kept its bytes: tuspy then asks again.
        resumed = tus.uploader(file_path=str(image_file), url=uploader.url,
                               chunk_size=MiB, retries=2, retry_delay=1)
        assert 2 * MiB <= resumed.offset < 2 * MiB + MiB // 2
        resumed.upload()
    assert_active_with(api, image_id, DATA)


def test_four_parallel_streams(glance, identity, tmp_path):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    procs = [put_range(glance, identity, image_id, tmp_path, *part)
             for part in quarters()]
    assert [p.communicate()[0] for p in procs] == ['204'] * 4
    assert_active_with(api, image_id, DATA)


def test_another_project_sees_nothing_and_harms_nothing(glance, identity,
                                                        tmp_path):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    parts = quarters()
    assert put_range(glance, identity, image_id, tmp_path,
                     *parts[0]).communicate()[0] == '204'
    before = status(api, image_id)[1]
    other = glance.identity_headers(uuid.uuid4().hex, roles=ROLES)
    session = '/v2/images/%s/file/session' % image_id
    for method in ('GET', 'DELETE'):
        out = subprocess.run(curl(glance, other, method, session),
                             capture_output=True, text=True, check=True)
        assert out.stdout == '404'
    assert put_range(glance, other, image_id, tmp_path,
                     *parts[1]).communicate()[0] == '404'
    after = status(api, image_id)[1]
    assert after['ranges_held'] == before['ranges_held']
    assert after['phase'] == 'paused_system'
    for part in parts[1:]:
        assert put_range(glance, identity, image_id, tmp_path,
                         *part).communicate()[0] == '204'
    assert_active_with(api, image_id, DATA)


def test_bad_ranges_and_status_document(glance, identity, tmp_path):
    api = client.GlanceClient(glance.url, identity)
    image_id = api.create_image()
    path = '/v2/images/%s/file' % image_id
    resp = api.request('PUT', path, body=b'x', headers={
        'Content-Range': 'bytes %d-%d/%d' % (N, N, N)})
    assert resp.status == 416, resp
    resp = api.request('PUT', path, body=b'x', headers={
        'Content-Range': 'bytes 0-0/+%d' % N})
    assert resp.status == 400, resp
    resp = api.request('PUT', path, body=b'xy', headers={
        'Content-Range': 'bytes 0-0/%d' % N})
    assert resp.status == 400, resp
    resp = api.request('PUT', path, body=DATA[:10], headers={
        'Content-Range': 'bytes 0-9/%d' % N})
    assert resp.status == 204, resp
    assert resp.headers['range'] == 'bytes=0-9'
    code, document = status(api, image_id)
    assert document['bytes_held'] == 10 and document['size'] == N
    assert json.loads(json.dumps(document))['target'] == 'file'
    resp = api.request('DELETE', '/v2/images/%s/file/session' % image_id)
    assert resp.status == 204
    assert ended(api, image_id) == 'cancelled_user'
    assert api.get_image(image_id)['status'] == 'queued'


# -- behind keystone: real tokens of two projects' users -----------------


@pytest.fixture(scope='module')
def glance_keystone(postgres, keystone):
    """Glance 33 behind the run's keystone, with the resumable filter."""
    with conftest.glance_behind_keystone(
            postgres, keystone, 'glance33resumable', resumable={}) as server:
        yield server


def test_another_projects_user_gets_404_for_a_session_of_an_image_it_sees(
        glance_keystone, tmp_path):
    glance = glance_keystone
    owner, other = (conftest.client_for(glance, user)
                    for user in conftest.KEYSTONE_USERS)
    image_id = owner.create_image(visibility='community')
    # The other project sees the image, so only the session says no.
    # (tus HEAD and PATCH: see the next test.)
    assert other.get_image(image_id)['status'] == 'queued'
    parts = quarters()
    assert put_range(glance, dict(owner.headers, **{
        'X-Image-Sha256': SHA256}), image_id, tmp_path,
        *parts[0]).communicate()[0] == '204'
    before = status(owner, image_id)[1]
    session = '/v2/images/%s/file/session' % image_id
    for method in ('GET', 'DELETE'):
        out = subprocess.run(curl(glance, other.headers, method, session),
                             capture_output=True, text=True, check=True)
        assert out.stdout == '404', method
    for part in (parts[0], parts[1]):
        assert put_range(glance, other.headers, image_id, tmp_path,
                         *part).communicate()[0] == '404'
    after = status(owner, image_id)[1]
    assert after['ranges_held'] == before['ranges_held']
    assert after['phase'] == 'paused_system' and after['error'] is None
    for part in parts[1:]:
        assert put_range(glance, owner.headers, image_id, tmp_path,
                         *part).communicate()[0] == '204'
    assert_active_with(owner, image_id, DATA)


# -- two API servers on one spool -----------------------------------------


@pytest.fixture(scope='module')
def glance_pair(postgres, tmp_path_factory):
    """Two Glance 33 API servers, as two nodes behind a load balancer: one
    spool directory, one store directory, one PostgreSQL database."""
    shared = tmp_path_factory.mktemp('pair')
    database = postgres.create_database('glance33pair')
    servers = [glance_stack.Glance(
        '33', processes=1, threads=4, database_url=database,
        resumable={'spool_dir': shared / 'spool'},
        backends={'fs': ('file', {
            'filesystem_store_datadir': shared / 'images'})})
        for _ in range(2)]
    try:
        for server in servers:
            server.spool_dir = shared / 'spool'
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _parent(pid):
    with open('/proc/%d/stat' % pid) as stat:
        return int(stat.read().rsplit(')', 1)[1].split()[1])


def test_two_servers_one_spool_behind_a_round_robin_proxy(glance_pair,
                                                          tmp_path):
    """Every request a new connection, and the proxy hands connections to
    the two servers in turn: one upload served alternately, one server's
    worker killed mid-write."""
    servers = glance_pair
    identity = servers[0].identity_headers(uuid.uuid4().hex, roles=ROLES)
    with faultproxy.FaultProxy([('127.0.0.1', server.port)
                                for server in servers]) as proxy:
        front = types.SimpleNamespace(url=proxy.url)
        api = client.GlanceClient(proxy.url, identity)
        image_id = api.create_image()
        parts = quarters()
        assert put_range(front, dict(identity, **{
            'X-Image-Sha256': SHA256}), image_id, tmp_path,
            *parts[1]).communicate()[0] == '204'
        assert put_range(front, identity, image_id, tmp_path,
                         *parts[3]).communicate()[0] == '204'
        # Quarter 1, whose worker is killed mid-write.
        data_file = servers[0].spool_dir / ('%s.file' % image_id) / 'data'
        cut = put_range(front, identity, image_id, tmp_path, *parts[0],
                        rate='512k')
        time.sleep(1.5)
        (worker,) = procfs.pids_with_open(data_file)
        (victim,) = [server for server in servers
                     if _parent(worker) in server.pids.values()]
        os.kill(worker, signal.SIGKILL)
        assert cut.communicate()[0] != '204'
        victim.wait_for_http(victim.url + '/versions', 30, ok=(200, 300))
        # Either server sees every byte that reached the spool, and claims
        # none that is not on disk. The killed worker claimed nothing
        # itself (it would every CHECKPOINT_BYTES, 16 MiB): what is
        # held of quarter 1 comes from its journal.
        documents = [status(api, image_id) for _ in servers]
        assert documents[0] == documents[1]
        code, document = documents[0]
        assert code == 200
        held = [tuple(r) for r in document['ranges_held']]
        (first_held, second, fourth) = held
        assert first_held[0] == 0 and 0 < first_held[1] < parts[0][1], held
        assert (second, fourth) == (parts[1], parts[3])
        assert document['phase'] == 'paused_system'
        on_disk = data_file.read_bytes()
        for first, last in held:
            assert on_disk[first:last + 1] == DATA[first:last + 1]
        # The upload goes on, alternating between the servers.
        assert put_range(front, identity, image_id, tmp_path,
                         *parts[2]).communicate()[0] == '204'
        assert put_range(front, identity, image_id, tmp_path,
                         first_held[1] + 1, parts[0][1]
                         ).communicate()[0] == '204'
        assert_active_with(api, image_id, DATA)
        assert ended(api, image_id) == 'finished_success'
        # Both servers took part: every request was a connection.
        assert proxy.connections >= 2 * len(servers)


def test_another_projects_user_gets_404_for_a_tus_upload(glance_keystone):
    glance = glance_keystone
    owner, other = (conftest.client_for(glance, user)
                    for user in conftest.KEYSTONE_USERS)
    image_id = owner.create_image(visibility='community')
    tus = {'Tus-Resumable': '1.0.0'}
    patch = dict(tus, **{'Content-Type': 'application/offset+octet-stream'})
    half = N // 2
    resp = owner.request('POST', '/v2/images/%s/file' % image_id,
                         headers=dict(tus, **{'Upload-Length': str(N)}))
    assert resp.status == 201, resp
    upload = urllib.parse.urlsplit(resp.headers['location']).path
    resp = owner.request('PATCH', upload, body=DATA[:half], headers=dict(
        patch, **{'Upload-Offset': '0'}))
    assert resp.status == 204, resp
    for method, body, extra in (
            ('HEAD', None, {}),
            ('PATCH', DATA[half:], {'Upload-Offset': str(half)}),
            ('PATCH', DATA[:10], {'Upload-Offset': '0'}),
            ('DELETE', None, {})):
        resp = other.request(method, upload, body=body,
                             headers=dict(patch, **extra))
        assert resp.status == 404, (method, resp)
    resp = owner.request('HEAD', upload, headers=tus)
    assert resp.status == 200
    assert resp.headers['upload-offset'] == str(half)
    resp = owner.request('PATCH', upload, body=DATA[half:], headers=dict(
        patch, **{'Upload-Offset': str(half)}))
    assert resp.status == 204, resp
    assert_active_with(owner, image_id, DATA)


def test_tus_discovery_needs_no_token_and_nothing_else_passes_without(
        glance_keystone):
    anonymous = client.GlanceClient(glance_keystone.url, {})
    owner = conftest.client_for(glance_keystone,
                                conftest.KEYSTONE_USERS[0])
    image_id = owner.create_image()
    url = '/v2/images/%s/file' % image_id
    resp = anonymous.request('OPTIONS', url)
    assert resp.status == 204, resp
    assert resp.headers['tus-version'] == '1.0.0'
    assert 'concatenation' in resp.headers['tus-extension']
    # The session extended by its owner only; the rest still needs a token.
    resp = anonymous.request('POST', url, headers={
        'Tus-Resumable': '1.0.0', 'Upload-Length': str(N)})
    assert resp.status == 401, resp
    resp = owner.request('POST', url, headers={
        'Tus-Resumable': '1.0.0', 'Upload-Length': str(N)})
    assert resp.status == 201, resp
    assert anonymous.request('POST', url + '/session').status == 401
    assert owner.request('POST', url + '/session').status == 200
    assert owner.request('DELETE', url + '/session').status == 204


def test_a_finalize_whose_worker_died_is_redone_on_the_other_server(
        glance_pair, tmp_path):
    one, two = glance_pair
    identity = one.identity_headers(uuid.uuid4().hex, roles=ROLES)
    api = client.GlanceClient(two.url, identity)
    image_id = api.create_image()
    assert put_range(one, dict(identity, **{'X-Image-Sha256': SHA256}),
                     image_id, tmp_path, 0, N - 2).communicate()[0] == '204'
    # This process plays a worker of the first server that sent the last
    # byte, took the session to finalizing, and died before Glance had
    # the image: its locks go with it.
    spool = spools.Spool(str(one.spool_dir))
    session = spool.session(image_id, 'file', (identity['X-Project-Id'],
                                               identity['X-User-Id']))
    with session.writer(N - 1, N - 1) as stream_class:
        writer = stream_class(lambda hint: DATA[N - 1:], 1, True)
        writer.read(1)
        assert session.commit(*writer.unclaimed())[1]
    assert status(api, image_id)[1]['phase'] == 'finalizing'
    session.close()
    code, document = status(api, image_id)
    assert (document['phase'], document['bytes_held']) == ('paused_system', N)
    assert 'interrupted' in document['error']
    assert api.get_image(image_id)['status'] == 'queued'
    # Any range sent again finishes the upload.
    assert put_range(two, identity, image_id, tmp_path,
                     N - 1, N - 1).communicate()[0] == '204'
    assert_active_with(api, image_id, DATA)
