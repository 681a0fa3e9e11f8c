"""Resumable uploads' spool on a CephFS shared by two Glance API nodes.

The resumable filter's documentation lets several API nodes share one
spool directory on a filesystem with coherent POSIX record locks, CephFS
among them. These tests prove it on a real CephFS of the run's Ceph
cluster, mounted twice with ``ceph-fuse``: two mounts, two cephx clients,
two CephFS client sessions with the MDS, as two hosts would have.

* The open-file-description byte-range locks the sessions take
  (:mod:`sizeaware.sessions.locks`) are coherent between the two clients:
  a lock taken through one mount is seen, and excluded, through the
  other; it is free again there once released, once its descriptor is
  closed, and once the process holding it is killed. They are because
  ceph-fuse hands every POSIX lock (OFD locks included: the kernel's FUSE
  module passes the open file as the lock's owner) to the MDS, libfuse's
  default. Mounted with ``-o no_remote_posix_lock`` (or ``no_remote_lock``)
  each mount keeps its locks to itself, silently: a lock taken through
  one mount is then free through the other, and these tests fail.
* Two Glance 33 nodes under uwsgi, on 127.0.0.2 and 127.0.0.3, each with
  its spool on its own mount of the same directory (``session_storage =
  spool``), one PostgreSQL database and the RBD store, behind a
  round-robin proxy: one image uploaded with ranged PUTs that alternate
  between the nodes turns ``active`` with exactly its bytes.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

from sizeaware.sessions import locks
from tests.functional import client
from tests.functional import two_nodes
from tests.functional.test_resumable import ended

MiB = 1024 * 1024
DATA = os.urandom(6 * MiB + 5)
N = len(DATA)
#: Six ranges of uneven sizes, sent in this order (not the image's):
#: each node writes three of them, and the last completes the image.
CUTS = [0, MiB + 3, 2 * MiB, 3 * MiB + 100, 4 * MiB, 5 * MiB + 7, N]
RANGES = [(CUTS[i], CUTS[i + 1] - 1) for i in (1, 0, 3, 2, 5, 4)]
ROLES = ('member', 'reader')
#: The session's lock byte the request finalizing it holds (see
#: ``sizeaware.sessions.storage.spool``).
FINALIZE_BYTE = 2 ** 62
#: Seconds a lock freed through one client may take to be seen free
#: through the other: the FUSE release of a closed file is asynchronous.
SETTLE = 10


@pytest.fixture(scope='module')
def mounts(cephfs, tmp_path_factory):
    """The same fresh directory of the run's CephFS, seen through two
    ``ceph-fuse`` mounts (cephx clients ``spool-node1``, ``spool-node2``):
    ``(path through the first, path through the second)``."""
    base = tmp_path_factory.mktemp('cephfs')
    top = 'spool-test-%s' % uuid.uuid4().hex[:12]
    with cephfs.mount(base / 'node1', 'spool-node1') as first, \
            cephfs.mount(base / 'node2', 'spool-node2') as second:
        (first.path / top).mkdir()
        try:
            yield first.path / top, second.path / top
        finally:
            shutil.rmtree(first.path / top, ignore_errors=True)


@pytest.fixture(scope='module')
def nodes(postgres, ceph_rbd, mounts, tmp_path_factory):
    """Two Glance 33 nodes whose spools are one CephFS directory, each
    through its own mount, behind a round-robin proxy."""
    spools = [path / 'spool' for path in mounts]
    with two_nodes.two_glance_nodes(
            postgres, 'glance_cephfs_spool',
            tmp_path_factory.mktemp('cephfs-nodes'),
            release='33', server='uwsgi', default_backend='ceph',
            backends={'ceph': ('rbd', {
                'rbd_store_pool': ceph_rbd.name,
                'rbd_store_user': ceph_rbd.user,
                'rbd_store_ceph_conf': ceph_rbd.conf_path,
                'rbd_store_chunk_size': 8})},
            node_options=[{'resumable': {'spool_dir': spool,
                                         'session_storage': 'spool'}}
                          for spool in spools]) as pair:
        for node, spool in zip(pair.nodes, spools):
            node.spool_dir = spool
        yield pair


def _eventually_free(fd, start, length):
    """Whether the lock becomes free through ``fd`` within
    :data:`SETTLE` seconds (and is then taken through it)."""
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        if locks.try_acquire(fd, start, length):
            return True
        time.sleep(0.05)
    return False


def test_ofd_locks_are_coherent_between_two_cephfs_clients(mounts):
    first, second = mounts
    name = 'locks-%s' % uuid.uuid4().hex
    (first / name).write_bytes(b'\0' * 64)
    a = os.open(first / name, os.O_RDWR)
    b = os.open(second / name, os.O_RDWR)
    try:
        # Taken through A: seen and excluded through B, other bytes free.
        assert locks.try_acquire(a, 1, 10)
        assert locks.held_by_another(b, 1, 10)
        assert locks.held_by_another(b, 10, 5)
        assert not locks.try_acquire(b, 5, 10)
        assert not locks.held_by_another(b, 11, 10)
        assert locks.try_acquire(b, 11, 10)
        # ... and the other way round.
        assert locks.held_by_another(a, 20, 1)
        assert not locks.try_acquire(a, 20, 1)
        # The finalize byte, far past the end of the file.
        assert locks.try_acquire(a, FINALIZE_BYTE, 1)
        assert locks.held_by_another(b, FINALIZE_BYTE, 1)
        # Released through A: free through B.
        locks.release(a, 1, 10)
        assert not locks.held_by_another(b, 1, 10)
        locks.release(b, 11, 10)
        locks.release(a, FINALIZE_BYTE, 1)
        # A whole-file lock through A (as a journal's owner takes it); a
        # waiting acquire through B gets it once A's descriptor is closed.
        assert locks.try_acquire(a, 0, 0)
        got = threading.Event()

        def wait_for_lock():
            locks.acquire(b, 0, 0)
            got.set()
        threading.Thread(target=wait_for_lock, daemon=True).start()
        assert not got.wait(1)
        os.close(a)
        a = None
        assert got.wait(SETTLE)
        locks.release(b, 0, 0)
    finally:
        for fd in (a, b):
            if fd is not None:
                os.close(fd)


def test_a_killed_holder_leaves_nothing_locked_for_the_other_client(mounts):
    """A uwsgi worker SIGKILLed on one node must not leave a session
    locked for the other node: the kernel closes its files, ceph-fuse
    releases their locks with the MDS."""
    first, second = mounts
    name = 'killed-%s' % uuid.uuid4().hex
    (first / name).write_bytes(b'\0' * 64)
    holder = subprocess.Popen([sys.executable, '-c', (
        'import os, sys, time\n'
        'from sizeaware.sessions import locks\n'
        'fd = os.open(sys.argv[1], os.O_RDWR)\n'
        'assert locks.try_acquire(fd, 1, 10)\n'
        'print("held", flush=True)\n'
        'time.sleep(600)\n'), str(first / name)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'held\n'
        b = os.open(second / name, os.O_RDWR)
        try:
            assert locks.held_by_another(b, 1, 10)
            holder.kill()
            holder.wait()
            assert _eventually_free(b, 1, 10)
        finally:
            os.close(b)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def put_range(api, image_id, first, last):
    return api.request('PUT', '/v2/images/%s/file' % image_id,
                       body=DATA[first:last + 1], headers={
                           'Content-Range': 'bytes %d-%d/%d' % (first, last,
                                                                N),
                           'Content-Type': 'application/octet-stream'})


def served_puts(node, image_id):
    """How many data PUTs of the image ``node`` answered with 204, from
    uwsgi's request log."""
    request = 'PUT /v2/images/%s/file =>' % image_id
    return sum(request in line and '(HTTP/1.1 204)' in line
               for line in node.log_path.read_text(
                   errors='replace').splitlines())


def test_ranged_puts_alternating_between_two_nodes(nodes, mounts):
    api = client.GlanceClient(nodes.url, nodes.identity_headers(
        uuid.uuid4().hex, roles=ROLES))
    direct = [client.GlanceClient(node.url, api.headers)
              for node in nodes.nodes]
    image_id = api.create_image()
    for first, last in RANGES[:-1]:
        resp = put_range(api, image_id, first, last)
        assert resp.status == 204, resp
    # Both nodes read the same session from the shared spool: the ranges
    # written through either, and the bytes, seen through either mount.
    documents = [direct[i].request(
        'GET', '/v2/images/%s/file/session' % image_id) for i in (0, 1)]
    assert [d.status for d in documents] == [200, 200], documents
    # Every request extends the session: the two reads may be a second
    # apart in updated_at and expires_at, and agree on everything else.
    first_seen, second_seen = ({k: v for k, v in d.json().items()
                                if k not in ('updated_at', 'expires_at')}
                               for d in documents)
    assert first_seen == second_seen
    held = [tuple(r) for r in documents[0].json()['ranges_held']]
    missing_first, missing_last = RANGES[-1]
    assert held == [(0, missing_first - 1), (missing_last + 1, N - 1)]
    for mount in mounts:
        data = (mount / 'spool' / ('%s.file' % image_id) / 'data'
                ).read_bytes()
        for first, last in held:
            assert data[first:last + 1] == DATA[first:last + 1]
    resp = put_range(api, image_id, *RANGES[-1])
    assert resp.status == 204, resp
    # Each node answered three of the six (every request is a connection
    # of its own, handed to the nodes in turn).
    assert [served_puts(node, image_id) for node in nodes.nodes] == [3, 3]

    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('active', N)
    assert image['os_hash_algo'] == 'sha512'
    assert image['os_hash_value'] == hashlib.sha512(DATA).hexdigest()
    assert api.download(image_id).body == DATA
    assert ended(api, image_id) == 'finished_success'
    # The session kept its record only: no byte left in the spool.
    for mount in mounts:
        assert not (mount / 'spool' / ('%s.file' % image_id) / 'data'
                    ).exists()


def test_upload_goes_on_across_a_killed_worker_and_a_restarted_node(
        nodes, mounts):
    """Between two ranges, node 1's worker is SIGKILLed (uwsgi respawns
    it) and node 2 is restarted: the session lives in the shared spool,
    not in either node, and the upload goes on through both."""
    api = client.GlanceClient(nodes.url, nodes.identity_headers(
        uuid.uuid4().hex, roles=ROLES))
    image_id = api.create_image()
    for first, last in RANGES[:2]:
        assert put_range(api, image_id, first, last).status == 204
    killed = nodes.kill_workers(0)
    assert set(killed).isdisjoint(nodes.workers(0))
    for first, last in RANGES[2:4]:
        assert put_range(api, image_id, first, last).status == 204
    (master,) = nodes.nodes[1].pids.values()
    nodes.restart(1)
    assert master not in nodes.nodes[1].pids.values()
    for first, last in RANGES[4:]:
        assert put_range(api, image_id, first, last).status == 204
    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('active', N)
    assert image['os_hash_value'] == hashlib.sha512(DATA).hexdigest()
    assert api.download(image_id).body == DATA
