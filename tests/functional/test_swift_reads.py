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

import hashlib
import http.client
import os
import re
import subprocess
import time
import urllib.parse
import uuid

import pytest

from tests.functional import client
from tests.functional import conftest
from tests.functional import faultproxy
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
#: The download filter (in every pipeline) lets a Range through to Glance
#: for both drivers' images.
DOWNLOAD = conftest.ranged_download_options(DRIVERS)

pytestmark = conftest.needs_release(RELEASE)


def swift_glance(swift, postgres_url, container, driver, **extra):
    """A Glance 33 whose backend ``swift`` is of type ``driver``."""
    backend = swift.glance_backend(container,
                                   large_object_size=LARGE_OBJECT_SIZE,
                                   chunk_size=CHUNK_SIZE,
                                   endpoint=extra.pop('endpoint', None))
    backend.update(extra)
    return glance_stack.Glance(
        RELEASE, with_filter=conftest.WITH_FILTER, download=DOWNLOAD,
        database_url=postgres_url,
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


# -- restarts ---------------------------------------------------------------
#
# A third Glance 33 (``sizeaware_swift``, its own container) reaches the
# Swift proxy through a fault proxy (tests/functional/faultproxy.py), which
# breaks Swift's answers to Glance at chosen offsets: resets, clean early
# ends, stalls. Its images of 256 MiB are segmented (large objects from 200
# "MB", segments of 64 "MB": 5 segments, the last one short), so every
# restart is a ranged GET of a manifest pinned to its ETag. The client
# reads Glance directly, hashing as it reads, and must get the whole image
# with the right sha256, or a broken connection: never a short body that
# looks complete, never bytes of another object spliced in.

@pytest.fixture(scope='module')
def big_data():
    data = ranges.random_bytes(ranges.BIG)
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope='module')
def proxy(swift):
    target = urllib.parse.urlsplit(swift.url)
    with faultproxy.FaultProxy((target.hostname, target.port)) as server:
        yield server


@pytest.fixture(autouse=True)
def disarmed(request):
    """No reply fault outlives its test."""
    yield
    if 'proxy' in request.fixturenames:
        request.getfixturevalue('proxy').cut_reply_at()


@pytest.fixture(scope='module')
def faulty(swift, keystone, postgres, proxy):
    """``(Glance, container)``: ``sizeaware_swift`` through the proxy."""
    from tests.functional import test_swift_store
    account = test_swift_store.swift_connection(keystone).get_auth()[0]
    container = 'glance-%s' % uuid.uuid4().hex[:12]
    server = swift_glance(
        swift, postgres.create_database('swift_faults_%s'
                                        % uuid.uuid4().hex[:8]),
        container, 'sizeaware_swift',
        endpoint='%s/v1/%s' % (proxy.url, account.split('/v1/')[1]),
        swift_store_large_object_size=200,
        swift_store_large_object_chunk_size=64, **ranges.READ_OPTIONS)
    server.start()
    yield server, container
    server.stop()


@pytest.fixture(scope='module')
def fapi(faulty, project):
    server, _ = faulty
    return client.GlanceClient(server.url, server.identity_headers(project))


@pytest.fixture(scope='module')
def big_image(fapi, big_data):
    image_id = fapi.create_image()
    resp = fapi.upload(image_id, big_data[0], size=ranges.BIG)
    assert resp.status == 204, resp
    return image_id


def restarts_logged(glance, image_id):
    """The restarts the store logged for ``image_id`` so far."""
    text = (glance.workdir / 'glance.log').read_text(errors='replace')
    return len(re.findall(r'Restarting the read of Swift object \S+/%s '
                          % image_id, text))


@pytest.mark.parametrize('fault, count', ranges.FAULTS)
def test_download_survives_broken_swift_reads(faulty, fapi, proxy, big_image,
                                             big_data, fault, count):
    glance, _ = faulty
    before = restarts_logged(glance, big_image)
    proxy.reset_counters()
    ranges.break_replies(proxy, fault, count)
    got = ranges.Streamed(fapi, big_image)
    ranges.assert_streamed_whole(got, ranges.BIG, big_data[1])
    assert proxy.reply_faults == count
    # One request per break, no more: no retry of swiftclient's or
    # glance_store's beneath the driver's own.
    assert restarts_logged(glance, big_image) - before == count
    assert proxy.connections == count + 1


def test_more_breaks_than_retries_each_after_progress_are_survived(
        faulty, fapi, proxy, big_image, big_data):
    """``read_retries`` counts failures in a row: a read that breaks more
    often than that, advancing between the breaks, arrives whole."""
    glance, _ = faulty
    count = ranges.RETRIES + 2
    before = restarts_logged(glance, big_image)
    proxy.cut_reply_at(*ranges.spread(count))
    got = ranges.Streamed(fapi, big_image)
    ranges.assert_streamed_whole(got, ranges.BIG, big_data[1])
    assert proxy.reply_faults == count
    assert restarts_logged(glance, big_image) - before == count


def test_a_first_read_swift_never_answers_is_503(fapi, proxy):
    """Every request for the object reset before a byte of its answer,
    until the retries are spent: Glance answers 503, as for the S3 and
    HTTP stores, not 500; the next download is whole."""
    data = os.urandom(MIB + 5)
    image_id = fapi.create_image()
    assert fapi.upload(image_id, data, size=len(data)).status == 204
    proxy.cut_reply_at(*[0] * (ranges.RETRIES + 1))
    resp = fapi.download(image_id)
    assert resp.status == 503, resp
    assert proxy.reply_faults == ranges.RETRIES + 1
    proxy.cut_reply_at()
    ranges.assert_whole(fapi.download(image_id), data)


def test_ranged_download_survives_a_cut(fapi, proxy, big_image, big_data):
    first, last = 10 * MIB + 3, 200 * MIB - 5
    proxy.cut_reply_at(50 * MIB)
    got = ranges.Streamed(fapi, big_image,
                          {'Range': 'bytes=%d-%d' % (first, last)})
    assert (got.status, got.error) == (206, None)
    assert got.headers['content-range'] == 'bytes %d-%d/%d' % (first, last,
                                                               ranges.BIG)
    assert got.sha256 == hashlib.sha256(
        big_data[0][first:last + 1]).hexdigest()
    assert proxy.reply_faults == 1


def test_spent_retries_break_the_client_connection(fapi, proxy, big_image,
                                                   big_data):
    """A break, then every restart broken too: after ``read_retries``
    restarts the client's connection breaks; it never gets a short body
    that ends cleanly."""
    first = ranges.BIG // 3
    proxy.cut_reply_at(*[first + i for i in range(ranges.RETRIES + 1)])
    got = ranges.Streamed(fapi, big_image)
    assert got.status == 200
    assert int(got.headers['content-length']) == ranges.BIG
    assert isinstance(got.error, (http.client.IncompleteRead, OSError))
    assert got.received < ranges.BIG
    assert proxy.reply_faults == ranges.RETRIES + 1
    # An unmodified client says so too: curl's "transfer closed with N
    # bytes remaining to read" is exit status 18.
    proxy.cut_reply_at(*[first + i for i in range(ranges.RETRIES + 1)])
    curl = subprocess.run(
        ['curl', '-sS', '-o', os.devnull, '-w', '%{size_download}',
         *[a for name, value in fapi.headers.items()
           for a in ('-H', '%s: %s' % (name, value))],
         'http://%s:%d/v2/images/%s/file' % (fapi.host, fapi.port,
                                            big_image)],
        capture_output=True, text=True, timeout=120)
    assert curl.returncode == 18, curl
    assert int(curl.stdout) < ranges.BIG
    proxy.cut_reply_at()
    # The image itself is fine: the next download is whole.
    assert ranges.Streamed(fapi, big_image).sha256 == big_data[1]


def test_object_replaced_before_a_restart_is_not_spliced(
        faulty, fapi, keystone, proxy):
    """The client stops reading after 8 MiB, so every buffer fills and
    Glance's read of Swift waits; the object is then replaced in Swift and
    Glance's connection to Swift cut at its next byte. The restart's
    ``If-Match`` gets 412: the client's connection breaks after bytes of
    the first object only."""
    from tests.functional import test_swift_store
    glance, container = faulty
    size = 64 * MIB
    data, other = ranges.random_bytes(size), ranges.random_bytes(size)
    image_id = fapi.create_image()
    assert fapi.upload(image_id, data, size=size).status == 204
    conn = test_swift_store.swift_connection(keystone)

    def replace_and_cut():
        time.sleep(1)
        conn.put_object(container, image_id, other)
        proxy.cut_reply_at(0)

    before = restarts_logged(glance, image_id)
    got = ranges.Streamed(fapi, image_id, keep=True, pause_after=8 * MIB,
                          on_pause=replace_and_cut)
    conn.close()
    assert got.status == 200
    assert isinstance(got.error, (http.client.IncompleteRead, OSError))
    assert 8 * MIB <= got.received < size
    assert bytes(got.body) == data[:got.received]
    assert restarts_logged(glance, image_id) - before == 1
    log = (glance.workdir / 'glance.log').read_text(errors='replace')
    assert 'the object changed since the read began (412' in log
