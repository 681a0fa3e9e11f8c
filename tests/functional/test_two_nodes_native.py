"""Two Glance API nodes continue each other's store-native sessions with
nothing shared but PostgreSQL and the store (Ceph RBD, or S3).

Two Glance 33 nodes (uwsgi) on 127.0.0.2 and 127.0.0.3, each with a spool
of its own on its own disk, behind a round-robin proxy
(:mod:`tests.functional.two_nodes`), their only backend RBD with
``session_storage = store``: a session's record, pieces and leases are in
the pool beside its RBD image (:mod:`sizeaware.sessions.storage.cluster`),
so a request reaching either node finds it. Successive requests alternate
between the nodes: ranged PUTs out of order, tuspy's PATCHes, four ranged
streams at once; and each of the three again across workers SIGKILLed
mid-write and a node restarted; with S3, whole parts and tus
PATCHes ending mid-part. Every image ends exact, and neither node's spool
ever holds a byte of it.
"""

import concurrent.futures
import functools
import os
import threading
import time
import uuid

import pytest
from tusclient import client as tus_client

from sizeaware.sessions.storage import cluster
from tests.functional import client
from tests.functional import test_store_native as native
from tests.functional import two_nodes
from tests.functional.test_store_native import wait_for_lease

MiB = 1024 * 1024
DATA = os.urandom(32 * MiB + 3)
N = len(DATA)
ROLES = ('member', 'reader')
put_range = functools.partial(native.put_range, data=DATA)


@pytest.fixture(scope='module')
def pair(postgres, ceph_rbd, tmp_path_factory):
    with two_nodes.two_glance_nodes(
            postgres, 'glance_native_pair',
            tmp_path_factory.mktemp('native-pair'), release='33',
            server='uwsgi', processes=2, threads=4, default_backend='ceph',
            backends={'ceph': ('rbd', {
                'rbd_store_pool': ceph_rbd.name,
                'rbd_store_user': ceph_rbd.user,
                'rbd_store_ceph_conf': ceph_rbd.conf_path,
                'rbd_store_chunk_size': 8})},
            resumable={}) as pair:
        yield pair


@pytest.fixture(scope='module')
def s3_pair(postgres, radosgw, s3, tmp_path_factory):
    """The same two nodes, their only backend S3 (radosgw)."""
    s3.create_bucket(Bucket='native-pair')
    with two_nodes.two_glance_nodes(
            postgres, 'glance_native_s3_pair',
            tmp_path_factory.mktemp('native-s3-pair'), release='33',
            server='uwsgi', processes=2, threads=4, default_backend='cloud',
            backends={'cloud': ('sizeaware_s3', {
                's3_store_host': radosgw.endpoint,
                's3_store_access_key': radosgw.access_key,
                's3_store_secret_key': radosgw.secret_key,
                's3_store_bucket': 'native-pair',
                's3_store_bucket_url_format': 'path'})},
            resumable={}) as pair:
        yield pair


@pytest.fixture
def api(pair):
    return client.GlanceClient(pair.url, pair.identity_headers(
        uuid.uuid4().hex, roles=ROLES))


def answered_by(pair, image_id):
    """How many of the image's PUTs and PATCHes each node answered 2xx
    (uwsgi's request log)."""
    counts = []
    for node in pair.nodes:
        log = (node.workdir / 'glance.log').read_text(errors='replace')
        counts.append(sum(1 for line in log.splitlines()
                          if '/v2/images/%s/file' % image_id in line
                          and ('] PUT ' in line or '] PATCH ' in line)
                          and '(HTTP/1.1 20' in line))
    return counts


def assert_exact(api, pair, image_id):
    image = api.get_image(image_id)
    assert image['status'] == 'active' and image['size'] == N, image
    for node in pair.nodes:
        assert list(node.spool_dir.glob('%s*' % image_id)) == []
        # Either node serves it, from the store.
        direct = client.GlanceClient(node.url, api.headers)
        assert direct.request('GET', '/v2/images/%s/file'
                              % image_id).body == DATA


def test_ranges_alternate_between_the_nodes(pair, api, ceph_rbd):
    image_id = api.create_image()
    sixth = N // 6
    bounds = [(i * sixth, (i + 1) * sixth - 1) for i in range(5)]
    bounds.append((5 * sixth, N - 1))
    for first, last in [bounds[i] for i in (3, 0, 5, 1, 4)]:
        assert put_range(api, image_id, first, last).status == 204
    # Both nodes read the same session from the cluster.
    documents = [client.GlanceClient(node.url, api.headers).request(
        'GET', '/v2/images/%s/file/session' % image_id).json()
        for node in pair.nodes]
    assert documents[0]['ranges_held'] == documents[1]['ranges_held']
    assert documents[0]['bytes_held'] == N - sixth
    assert put_range(api, image_id, *bounds[2]).status == 204
    assert_exact(api, pair, image_id)
    assert answered_by(pair, image_id) == [3, 3]


def test_tuspy_across_the_nodes(pair, api, tmp_path):
    image_id = api.create_image()
    path = tmp_path / 'image'
    path.write_bytes(DATA)
    tus = tus_client.TusClient('%s/v2/images/%s/file' % (pair.url,
                                                         image_id),
                               headers=dict(api.headers))
    tus.uploader(str(path), chunk_size=4 * MiB).upload()
    assert_exact(api, pair, image_id)
    assert min(answered_by(pair, image_id)) >= 3


def test_four_streams_at_once(pair, api):
    image_id = api.create_image()
    quarter = N // 4
    bounds = [(i * quarter, (i + 1) * quarter - 1) for i in range(3)]
    bounds.append((3 * quarter, N - 1))

    def stream(bound):
        first, last = bound
        # Each stream in 4 MiB requests, as a client sends them.
        codes = []
        for start in range(first, last + 1, 4 * MiB):
            codes.append(put_range(api, image_id, start,
                                   min(start + 4 * MiB, last + 1) - 1).status)
        return codes
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = [code for codes in pool.map(stream, bounds)
                 for code in codes]
    # Every request 204; the one that completed the image got Glance's.
    assert set(codes) == {204}, codes
    assert_exact(api, pair, image_id)
    assert min(answered_by(pair, image_id)) >= 3


def test_a_node_killed_mid_write_and_the_other_restarted(pair, api,
                                                         ceph_rbd, tmp_path):
    """curl sends the second half slowly through node 1 (127.0.0.2)
    directly; every worker of node 1 is SIGKILLed mid-write, node 2 is
    restarted; the first half stays held, nothing of the cut request
    counts, and once the dead writer's lease lapsed the rest goes through
    the proxy (to either node) and the image is exact."""
    image_id = api.create_image()
    half = N // 2
    assert put_range(api, image_id, 0, half - 1).status == 204
    cut = native.slow_curl(pair.nodes[0].url, api, image_id, DATA, half,
                           tmp_path / 'rest')
    wait_for_lease(ceph_rbd, image_id)
    time.sleep(1)
    pair.kill_workers(0)
    killed_at = time.monotonic()
    assert cut.communicate()[0] != '204'
    pair.restart(1)
    document = api.request('GET', '/v2/images/%s/file/session'
                           % image_id).json()
    assert document['ranges_held'] == [[0, half - 1]], document
    # Until the dead writer's lease lapses its bytes are refused (409);
    # then the rest goes through.
    time.sleep(max(0.0, killed_at + cluster.WRITE_LEASE + 1
                   - time.monotonic()))
    resp = put_range(api, image_id, half, N - 1)
    assert resp.status == 204, resp
    assert_exact(api, pair, image_id)


def test_tuspy_across_a_node_killed_mid_patch(pair, api, ceph_rbd,
                                              tmp_path):
    """tuspy's third PATCH stalls in the proxy (the bytes before the stall
    reached a node); every worker of both nodes is SIGKILLed and node 1
    restarted; tuspy resumes from its upload URL through the proxy, from
    what the session holds, and the image is exact."""
    image_id = api.create_image()
    path = tmp_path / 'image'
    path.write_bytes(DATA)
    tus = tus_client.TusClient('%s/v2/images/%s/file' % (pair.url,
                                                         image_id),
                               headers=dict(api.headers))
    uploader = tus.uploader(str(path), chunk_size=4 * MiB)
    uploader.upload(stop_at=8 * MiB)
    pair.proxy.stall_at(2 * MiB, 30)
    failed = []

    def send():
        try:
            uploader.upload()
        except Exception as exc:  # the connection dies with the worker
            failed.append(exc)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert pair.proxy.stalled.wait(10)
    wait_for_lease(ceph_rbd, image_id)
    time.sleep(0.5)
    pair.kill_workers(0)
    pair.kill_workers(1)
    killed_at = time.monotonic()
    sender.join(40)
    assert failed and not sender.is_alive()
    pair.restart(0)
    time.sleep(max(0.0, killed_at + cluster.WRITE_LEASE + 1
                   - time.monotonic()))
    resumed = tus.uploader(str(path), url=uploader.url, chunk_size=4 * MiB)
    assert 8 * MiB <= resumed.offset < 12 * MiB
    resumed.upload()
    assert_exact(api, pair, image_id)


def test_four_streams_across_a_node_killed(pair, api, ceph_rbd):
    """Four ranged streams through the proxy; node 1's workers are
    SIGKILLed while they send; each stream sends again what did not get a
    204 (once the dead writers' leases lapsed), and the image is exact."""
    image_id = api.create_image()
    pieces = [(start, min(start + 2 * MiB, N) - 1)
              for start in range(0, N, 2 * MiB)]
    streams = [pieces[i::4] for i in range(4)]
    pair.proxy.stall_at(MiB, 3)     # one request slowed down, to be cut
    killed = threading.Event()
    left = []

    def stream(mine):
        for first, last in mine:
            try:
                ok = put_range(api, image_id, first, last,
                               timeout=30).status == 204
            except ConnectionError:
                ok = False
            if not ok:
                left.append((first, last))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(stream, mine) for mine in streams]
        wait_for_lease(ceph_rbd, image_id)
        pair.kill_workers(0)
        killed.set()
        killed_at = time.monotonic()
        for future in running:
            future.result()
    assert left, 'the kill cut no request'
    time.sleep(max(0.0, killed_at + cluster.WRITE_LEASE + 1
                   - time.monotonic()))
    for first, last in sorted(left):
        resp = put_range(api, image_id, first, last)
        assert resp.status == 204, resp
    assert_exact(api, pair, image_id)


def test_s3_parts_and_tails_alternate_between_the_nodes(s3_pair, tmp_path):
    """An S3 session continues on either node: ranged PUTs of whole
    parts, then tuspy's 3 MiB PATCHes whose tails one node keeps and the
    other takes up."""
    pair = s3_pair
    api = client.GlanceClient(pair.url, pair.identity_headers(
        uuid.uuid4().hex, roles=ROLES))
    image_id = api.create_image()
    part = 8 * MiB
    for first in (2 * part, 0, part):
        assert put_range(api, image_id, first, first + part - 1).status == 204
    assert put_range(api, image_id, 3 * part, N - 1).status == 204
    assert_exact(api, pair, image_id)

    image_id = api.create_image()
    path = tmp_path / 'image'
    path.write_bytes(DATA)
    tus = tus_client.TusClient('%s/v2/images/%s/file' % (pair.url,
                                                         image_id),
                               headers=dict(api.headers))
    tus.uploader(str(path), chunk_size=3 * MiB).upload()
    assert_exact(api, pair, image_id)
    assert min(answered_by(pair, image_id)) >= 4
