"""Ranged downloads from a real Swift with ``sizeaware_swift``, and the
switch between it and glance_store's own ``swift`` driver.

Two Glance 33 servers share one database and one Swift container (the
run's one-node Swift behind its Keystone; see ``teststack.swift``), each
with its backend ``swift``: one of glance_store's type ``swift``, one of
type ``sizeaware_swift``, configured alike (large objects from 8 "MB", in
segments of 2 "MB": glance_store's MB is 1000 x 1024 bytes). That is a
deployment before and after it changes the backend's type, both at once.
Identity comes from request headers; only the store authenticates to
Keystone.

Each driver stores a plain object (below the large-object size) and a
segmented one (a manifest and its segments); every image is read whole
through both, and by ranges through ours: 206 with exactly the range's
bytes, across segment boundaries too, 416 past the end. The negative
control: the stock driver answers 400 to any ``Range``.
"""

import os
import uuid

import pytest

from tests.functional import client
from tests.functional import conftest
from tests.functional import ranges
from teststack import glance as glance_stack

MIB = 1024 * 1024
#: glance_store's "MB".
MB = 1000 * 1024
LARGE_OBJECT_SIZE = 8
CHUNK_SIZE = 2
SEGMENT = CHUNK_SIZE * MB
#: Image sizes, and the piece a ranged read crosses the boundary of: the
#: driver's read size for a plain object, a segment for a segmented one.
SIZES = {'plain': (3 * MIB + 7, 64 * 1024),
         'segmented': (5 * SEGMENT + 12345, SEGMENT)}
#: glance_store 5.x's own driver cannot store a segmented image whose size
#: is not a multiple of the segment size (see test_swift_store.py): the
#: segmented image it stores has whole segments only.
STOCK_SEGMENTED = 5 * SEGMENT
RELEASE = '33'
DRIVERS = ('sizeaware_swift', 'swift')

pytestmark = pytest.mark.skipif(
    RELEASE not in conftest.RELEASES,
    reason='Glance %s is not in SIZEAWARE_GLANCE_RELEASES' % RELEASE)


def swift_glance(swift, postgres_url, container, driver, **extra):
    """A Glance 33 whose backend ``swift`` is of type ``driver``."""
    backend = swift.glance_backend(container,
                                   large_object_size=LARGE_OBJECT_SIZE,
                                   chunk_size=CHUNK_SIZE,
                                   endpoint=extra.pop('endpoint', None))
    backend.update(extra)
    return glance_stack.Glance(
        RELEASE, with_filter=conftest.WITH_FILTER, database_url=postgres_url,
        default_backend='swift', backends={'swift': (driver, backend)})


@pytest.fixture(scope='module')
def shared_store(postgres, swift):
    """``(database URL, container)`` every Glance of the module shares."""
    return (postgres.create_database('swift_reads_%s'
                                     % uuid.uuid4().hex[:8]),
            'glance-%s' % uuid.uuid4().hex[:12])


@pytest.fixture(scope='module')
def glances(swift, shared_store):
    servers = {}
    try:
        for driver in DRIVERS:
            servers[driver] = swift_glance(swift, *shared_store,
                                           driver).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope='module')
def project():
    return uuid.uuid4().hex


@pytest.fixture(scope='module')
def apis(glances, project):
    return {driver: client.GlanceClient(server.url,
                                        server.identity_headers(project))
            for driver, server in glances.items()}


@pytest.fixture(scope='module')
def images(apis):
    """``{(driver, kind): (image id, data)}``: each kind of image stored by
    each driver."""
    stored = {}
    for driver, api in apis.items():
        for kind, (size, _) in SIZES.items():
            if (driver, kind) == ('swift', 'segmented'):
                size = STOCK_SEGMENTED
            data = os.urandom(size)
            image_id = api.create_image()
            resp = api.upload(image_id, data, size=size)
            assert resp.status == 204, resp
            stored[driver, kind] = image_id, data
    return stored


@pytest.mark.parametrize('kind', SIZES)
@pytest.mark.parametrize('stored_by', DRIVERS)
@pytest.mark.parametrize('read_by', DRIVERS)
def test_image_reads_whole_whichever_driver_stored_it(apis, images, kind,
                                                       stored_by, read_by):
    image_id, data = images[stored_by, kind]
    ranges.assert_whole(apis[read_by].download(image_id), data)


@pytest.mark.parametrize('kind', SIZES)
@pytest.mark.parametrize('stored_by', DRIVERS)
@pytest.mark.parametrize('case', ranges.satisfiable(*SIZES['plain']))
def test_range_is_206_with_exactly_its_bytes(apis, images, kind, stored_by,
                                             case):
    image_id, data = images[stored_by, kind]
    header, start, end = ranges.satisfiable(len(data), SIZES[kind][1])[case]
    ranges.assert_range(
        ranges.download_range(apis['sizeaware_swift'], image_id, header),
        data, start, end)


@pytest.mark.parametrize('kind', SIZES)
@pytest.mark.parametrize('case', ranges.unsatisfiable(0))
def test_range_past_the_end_is_416(apis, images, kind, case):
    image_id, data = images['swift', kind]
    resp = ranges.download_range(apis['sizeaware_swift'], image_id,
                                 ranges.unsatisfiable(len(data))[case])
    assert resp.status == 416, resp


def test_control_stock_driver_refuses_any_range(apis, images):
    """Negative control: glance_store's own ``swift`` driver declares no
    random access, so Glance answers 400 even to ``bytes=0-``."""
    image_id, _ = images['sizeaware_swift', 'plain']
    resp = ranges.download_range(apis['swift'], image_id, 'bytes=0-')
    assert resp.status == 400, resp
