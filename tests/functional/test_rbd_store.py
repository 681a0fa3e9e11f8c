"""The declared size reaches a real Ceph RBD store: no resize while writing.

Glance runs with its ``rbd`` backend on the run's one Ceph cluster (pool
``images``, cephx client ``glance``; see the ``ceph_rbd`` fixture).
glance_store's rbd driver creates the RBD image with the size Glance hands
it. Given 0, an unknown size, it creates an empty image, grows it while
writing (by twice the chunk size, then doubling each time) and trims it to
the bytes written at the end. librbd logs every resize the client asks for
at ``debug_rbd = 5``, one line per call::

    ... 5 librbd::Operations: 0x55d0c2a1e440 resize: size=0, new_size=16777216

and the tests count those lines. With the filter, an upload carrying
``X-OpenStack-Image-Size`` is written without a single resize on every
release, chunked or not, and a size that does not match leaves no RBD image
behind. Two controls show that the count can fail: the same chunked upload
without the header, and, on the releases that ignore the header (before
2025.2), the upload with the header to a Glance without the filter. Both
resize the image.
"""

import hashlib
import os
import re
import time
import uuid

import pytest

from tests.functional import client
from tests.functional import conftest
from teststack import glance as glance_stack

MIB = 1024 * 1024
N = 64 * MIB + 5
#: ``rbd_store_chunk_size``: glance_store's RBD object size and write size.
CHUNK_MIB = 8
#: Releases whose Glance passes the store no size for a chunked upload
#: unless the filter frames it: they ignore the header.
HEADER_IGNORED = ('30', '29')

_LOG_PREFIX = rb'^\S+ [0-9a-f]+ +5 librbd::Operations: (0x[0-9a-f]+) '
#: librbd's ``Operations::resize`` (src/librbd/Operations.cc), once per
#: ``rbd_resize()``; not its ``execute_resize`` nor the ResizeRequest steps.
RESIZE = re.compile(_LOG_PREFIX + rb'resize: size=(\d+), new_size=(\d+)$',
                    re.M)
#: glance_store protects the image's snapshot after its last write and
#: resize: once this line is in the log, so are the upload's resizes.
SNAP_PROTECT = re.compile(_LOG_PREFIX + rb'snap_protect: snap_name=snap$',
                          re.M)


def deployments(with_filter, releases, suffix=''):
    return [pytest.param((release, with_filter),
                         id='glance%s%s' % (release, suffix))
            for release in releases]


@pytest.fixture(scope='module', params=deployments(conftest.WITH_FILTER,
                                                   conftest.RELEASES))
def glance_rbd(request, ceph_rbd):
    """Glance of each release with its only backend on RBD pool ``images``;
    a test parametrising it indirectly with :func:`deployments` gets a
    Glance without the filter."""
    release, with_filter = request.param
    server = glance_stack.Glance(
        release, with_filter=with_filter, default_backend='ceph',
        backends={'ceph': ('rbd', {
            'rbd_store_pool': ceph_rbd.name,
            'rbd_store_user': ceph_rbd.user,
            'rbd_store_ceph_conf': ceph_rbd.conf_path,
            'rbd_store_chunk_size': CHUNK_MIB,
        })})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def data():
    return os.urandom(N)


@pytest.fixture
def api(glance_rbd):
    return client.GlanceClient(glance_rbd.url, glance_rbd.identity_headers(
        project_id=uuid.uuid4().hex))


def upload_counting_resizes(api, pool, data, **kwargs):
    """Upload ``data`` to a new image; the image's id and the resizes
    librbd logged for it, as ``[(from, to)]`` in bytes.

    The resizes are the lines logged during the upload by the same open
    image (``librbd::Operations`` instance) that protected the image's
    snapshot; every test uploads one image at a time.
    """
    image_id = api.create_image()
    start = pool.log_path.stat().st_size
    resp = api.upload(image_id, data, piece=MIB, **kwargs)
    assert resp.status == 204, resp
    deadline = time.monotonic() + 10
    while True:
        with open(pool.log_path, 'rb') as log:
            log.seek(start)
            text = log.read()
        protect = SNAP_PROTECT.search(text)
        if protect:
            break
        assert time.monotonic() < deadline, (
            'no snap_protect in %s after the upload' % pool.log_path)
        time.sleep(0.05)
    resizes = [(int(old), int(new))
               for image, old, new in RESIZE.findall(text[:protect.start()])
               if image == protect.group(1)]
    return image_id, resizes


def assert_stored(api, image_id, data):
    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('active', len(data))
    body = api.download(image_id).body
    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize('chunked', [False, True], ids=['length', 'chunked'])
def test_declared_size_writes_without_resizing(api, ceph_rbd, data,
                                               chunked):
    image_id, resizes = upload_counting_resizes(
        api, ceph_rbd, data, size=N, chunked=chunked)
    assert resizes == []
    assert_stored(api, image_id, data)


@pytest.mark.parametrize('delta', [+1, -1], ids=['over', 'under'])
def test_mismatch_leaves_no_rbd_image(api, glance_rbd, ceph_rbd, data,
                                      delta):
    before = set(ceph_rbd.images())
    image_id = conftest.upload_mismatched(api, data, N, delta)
    assert set(ceph_rbd.images()) == before
    assert list(glance_rbd.staging_dir.iterdir()) == []
    # Nothing is in the way of a retry (an RBD image left behind would
    # answer 409 here).
    conftest.upload_again(api, image_id, data, N)
    assert api.get_image(image_id)['status'] == 'active'


def test_control_chunked_without_header_resizes(api, ceph_rbd, data):
    """Negative control: without the header the size is unknown, on every
    release: the image is grown while written, then trimmed to N."""
    image_id, resizes = upload_counting_resizes(api, ceph_rbd, data,
                                                chunked=True)
    assert len(resizes) > 0
    assert resizes[0][0] == 0 and resizes[-1][1] == N, resizes
    assert_stored(api, image_id, data)


@pytest.mark.parametrize(
    'glance_rbd',
    deployments(False, [r for r in conftest.RELEASES if r in HEADER_IGNORED],
                '-nofilter'),
    indirect=True)
def test_control_header_without_filter_resizes(api, ceph_rbd, data):
    """Negative control: what the filter buys on releases that ignore the
    header. The upload the first test writes without a resize, chunked
    with the header, on a Glance without the filter."""
    image_id, resizes = upload_counting_resizes(api, ceph_rbd, data,
                                                size=N, chunked=True)
    assert len(resizes) > 0
    assert resizes[0][0] == 0 and resizes[-1][1] == N, resizes
    assert_stored(api, image_id, data)
