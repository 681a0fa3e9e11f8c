"""Ranged downloads from a real Ceph RBD store with ``sizeaware_rbd``.

Two Glance 33 servers share one database and one RBD pool (``images`` of
the run's Ceph cluster, cephx client ``glance``), each with its backend
``ceph``: one of glance_store's type ``rbd``, one of type
``sizeaware_rbd``. That is a deployment before and after it changes the
backend's type, both at once: an image either one stored is an image of
the other. Images are stored by each, then read whole and by ranges
through both.

With ``sizeaware_rbd`` every range is answered 206 with exactly its
bytes, from the image's first byte to its last and across the store's
read size (``rbd_store_chunk_size``, 1 MiB here); a range starting at or
past the end is 416. The negative control: the stock driver answers 400 to
any ``Range``, ``bytes=0-`` included.
"""

import os
import uuid

import pytest

from tests.functional import client
from tests.functional import conftest
from tests.functional import ranges
from teststack import glance as glance_stack

MIB = 1024 * 1024
#: ``rbd_store_chunk_size`` in MiB: the size of the store's reads.
CHUNK_MIB = 1
PIECE = CHUNK_MIB * MIB
N = 5 * MIB + 12345
RELEASE = '33'
DRIVERS = ('sizeaware_rbd', 'rbd')
#: The download filter (in every pipeline) lets a Range through to Glance
#: for both drivers' images.
DOWNLOAD = conftest.ranged_download_options(DRIVERS)

pytestmark = conftest.needs_release(RELEASE)


@pytest.fixture(scope='module')
def glances(ceph_rbd, tmp_path_factory):
    """``{driver: Glance}``: the backend ``ceph`` of each type, one
    database."""
    database = tmp_path_factory.mktemp('rbd-reads') / 'glance.sqlite'
    servers = {}
    try:
        for driver in DRIVERS:
            server = glance_stack.Glance(
                RELEASE, with_filter=conftest.WITH_FILTER, download=DOWNLOAD,
                database_url='sqlite:///%s' % database,
                default_backend='ceph',
                backends={'ceph': (driver, {
                    'rbd_store_pool': ceph_rbd.name,
                    'rbd_store_user': ceph_rbd.user,
                    'rbd_store_ceph_conf': ceph_rbd.conf_path,
                    'rbd_store_chunk_size': CHUNK_MIB,
                })})
            servers[driver] = server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope='module')
def apis(glances):
    """``{driver: client}``, both of one project."""
    project = uuid.uuid4().hex
    return {driver: client.GlanceClient(server.url,
                                        server.identity_headers(project))
            for driver, server in glances.items()}


@pytest.fixture(scope='module')
def images(apis):
    """``{driver: (image id, data)}``: an image stored by each driver."""
    stored = {}
    for driver, api in apis.items():
        data = os.urandom(N)
        image_id = api.create_image()
        resp = api.upload(image_id, data, size=N)
        assert resp.status == 204, resp
        assert api.get_image(image_id)['status'] == 'active'
        stored[driver] = image_id, data
    return stored


@pytest.mark.parametrize('stored_by', DRIVERS)
@pytest.mark.parametrize('read_by', DRIVERS)
def test_image_reads_whole_whichever_driver_stored_it(apis, images,
                                                       stored_by, read_by):
    image_id, data = images[stored_by]
    ranges.assert_whole(apis[read_by].download(image_id), data)


@pytest.mark.parametrize('stored_by', DRIVERS)
@pytest.mark.parametrize('case', ranges.satisfiable(N, PIECE))
def test_range_is_206_with_exactly_its_bytes(apis, images, stored_by,
                                             case):
    header, start, end = ranges.satisfiable(N, PIECE)[case]
    image_id, data = images[stored_by]
    ranges.assert_range(
        ranges.download_range(apis['sizeaware_rbd'], image_id, header),
        data, start, end)


@pytest.mark.parametrize('case', ranges.unsatisfiable(N))
def test_range_past_the_end_is_416(apis, images, case):
    image_id, _ = images['rbd']
    resp = ranges.download_range(apis['sizeaware_rbd'], image_id,
                                 ranges.unsatisfiable(N)[case])
    assert resp.status == 416, resp


def test_control_stock_driver_refuses_any_range(apis, images):
    """Negative control: glance_store's own ``rbd`` driver declares no
    random access, so Glance answers 400 even to ``bytes=0-``."""
    image_id, _ = images['sizeaware_rbd']
    resp = ranges.download_range(apis['rbd'], image_id, 'bytes=0-')
    assert resp.status == 400, resp


def test_image_deleted_by_either_driver_leaves_no_rbd_image(
        apis, ceph_rbd):
    """Deletes are the stock driver's: an image stored by one driver and
    deleted through the other leaves nothing in the pool."""
    for stored_by, deleted_by in (DRIVERS, DRIVERS[::-1]):
        image_id = apis[stored_by].create_image()
        assert apis[stored_by].upload(image_id, b'x' * 1000,
                                      size=1000).status == 204
        assert image_id in ceph_rbd.images()
        resp = apis[deleted_by].request('DELETE', '/v2/images/%s' % image_id)
        assert resp.status == 204, resp
        assert image_id not in ceph_rbd.images()
