"""Downloads through Glance survive broken backend connections, and ranged
downloads work, for the S3 (radosgw) and HTTP (nginx) stores.

One Glance 33 under uwsgi has two backends: ``cloud`` of type
``sizeaware_s3`` on radosgw and ``web`` of type ``sizeaware_http`` on
nginx, each reached through its own fault proxy
(``tests/functional/faultproxy.py``), which breaks the store's answers to
Glance at chosen offsets: resets, clean early ends, stalls. The client
downloads from Glance directly, hashing as it reads, and must get the whole
image with the right sha256, or a broken connection: never a short body
that looks complete, never bytes of another object spliced in. Every test
runs for both stores; one runs the drivers on Glance 30 (glance_store
4.x) too.

The read options are set for a quick suite: ``read_retries = 10``,
``retry_backoff = 0.002`` (ten failures in a row wait about 2 s in all),
``stall_timeout = 2``.
"""

import hashlib
import json
import os
import re
import time
import urllib.parse
import uuid

import pytest

from tests.functional import client
from tests.functional import faultproxy
from tests.functional import ranges
from teststack import glance as glance_stack
from teststack import nginx

MIB = 1024 * 1024
STORES = ['s3', 'http']
BIG_DATA = ranges.random_bytes(ranges.BIG)
BIG_SHA = hashlib.sha256(BIG_DATA).hexdigest()


def s3_backend(driver, radosgw, host, bucket, **extra):
    return (driver, dict({
        's3_store_host': host,
        's3_store_access_key': radosgw.access_key,
        's3_store_secret_key': radosgw.secret_key,
        's3_store_bucket': bucket,
        's3_store_bucket_url_format': 'path',
        's3_store_large_object_size': 64,
        's3_store_large_object_chunk_size': 64,
    }, **extra))


def glance_conf(*ports):
    """Images of the HTTP store are made by adding a location to a queued
    image (PATCH), which needs the locations to be shown; Glance checks
    such a location's host (a loopback one only if allowed by name) and
    port against those web-download may use."""
    return {'DEFAULT': {'show_multiple_locations': True},
            'import_filtering_opts': {
                'allowed_hosts': '[127.0.0.1]',
                'allowed_ports': '[%s]' % ','.join(map(str, ports))}}


def sizeaware_glance(release, radosgw, bucket, proxies):
    """A (not yet started) Glance of ``release`` whose backends ``cloud``
    (``sizeaware_s3``) and ``web`` (``sizeaware_http``) read through the
    fault proxies."""
    return glance_stack.Glance(
        release, default_backend='cloud',
        extra_conf=glance_conf(proxies['http'].port),
        backends={
            'cloud': s3_backend('sizeaware_s3', radosgw, proxies['s3'].url,
                                bucket, **ranges.READ_OPTIONS),
            'web': ('sizeaware_http', dict(ranges.READ_OPTIONS)),
        })


@pytest.fixture(scope='module')
def web():
    with nginx.Nginx() as server:
        yield server


@pytest.fixture(scope='module')
def bucket(s3):
    name = 'restart-%s' % uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope='module')
def proxies(radosgw, web):
    rgw = urllib.parse.urlsplit(radosgw.endpoint)
    with faultproxy.FaultProxy((rgw.hostname, rgw.port)) as s3_proxy, \
            faultproxy.FaultProxy(('127.0.0.1', web.port)) as web_proxy:
        yield {'s3': s3_proxy, 'http': web_proxy}


@pytest.fixture(autouse=True)
def disarmed(request):
    """No reply fault outlives its test."""
    yield
    if 'proxies' in request.fixturenames:
        for proxy in request.getfixturevalue('proxies').values():
            proxy.cut_reply_at()


@pytest.fixture(scope='module')
def glance(radosgw, bucket, proxies):
    server = sizeaware_glance('33', radosgw, bucket, proxies)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def api(glance):
    return client.GlanceClient(glance.url, glance.identity_headers(
        project_id=uuid.uuid4().hex))


def add_http_image(api, web, base_url, data, name=None):
    """An image of the HTTP store: ``data`` served by nginx, its location
    under ``base_url`` (nginx's, or a fault proxy's in front of it)."""
    image_id = api.create_image()
    name = name or image_id
    (web.root / name).write_bytes(data)
    resp = api.request(
        'PATCH', '/v2/images/%s' % image_id,
        body=json.dumps([{'op': 'add', 'path': '/locations/-', 'value': {
            'url': '%s/%s' % (base_url, name), 'metadata': {}}}]),
        headers={'Content-Type':
                 'application/openstack-images-v2.1-json-patch'})
    assert resp.status == 200, resp
    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('active', len(data)), image
    assert image['stores'] == 'web', image
    return image_id


def add_s3_image(api, data):
    image_id = api.create_image()
    resp = api.upload(image_id, data, size=len(data))
    assert resp.status == 204, resp
    image = api.get_image(image_id)
    assert (image['status'], image['stores']) == ('active', 'cloud'), image
    return image_id


@pytest.fixture(scope='module')
def big_images(api, web, proxies):
    """The 256 MiB image in each store."""
    return {'s3': add_s3_image(api, BIG_DATA),
            'http': add_http_image(api, web, proxies['http'].url,
                                   BIG_DATA)}


def restarts_logged(glance, image_id):
    """Restarts the stores logged for ``image_id`` so far: the S3 store
    names the object by its key, the image's id; the HTTP store by its URL,
    whose path is the id too (see :func:`add_http_image`)."""
    text = (glance.workdir / 'glance.log').read_text(errors='replace')
    return len(re.findall(r'Restarting the read of \S+/%s at byte'
                          % image_id, text))


@pytest.mark.parametrize('store', STORES)
@pytest.mark.parametrize('fault, count', ranges.FAULTS)
def test_download_survives_broken_backend_reads(
        glance, api, proxies, big_images, store, fault, count):
    proxy, image_id = proxies[store], big_images[store]
    before = restarts_logged(glance, image_id)
    ranges.break_replies(proxy, fault, count)
    got = ranges.Streamed(api, image_id)
    ranges.assert_streamed_whole(got, ranges.BIG, BIG_SHA)
    assert proxy.reply_faults == count
    # One request per break, no more.
    assert restarts_logged(glance, image_id) - before == count


@pytest.mark.parametrize('store', STORES)
def test_more_breaks_than_retries_each_after_progress_are_survived(
        glance, api, proxies, big_images, store):
    """``read_retries`` counts failures in a row: a read that breaks more
    often than that, advancing between the breaks, arrives whole."""
    proxy, image_id = proxies[store], big_images[store]
    count = ranges.RETRIES + 2
    before = restarts_logged(glance, image_id)
    proxy.cut_reply_at(*ranges.spread(count))
    got = ranges.Streamed(api, image_id)
    ranges.assert_streamed_whole(got, ranges.BIG, BIG_SHA)
    assert proxy.reply_faults == count
    assert restarts_logged(glance, image_id) - before == count


def test_http_restarts_ask_for_the_exact_rest_pinned_to_the_etag(
        glance, api, web, proxies, big_images):
    """nginx's log: each restart is a 206 for the rest, from the byte
    where the body broke, with ``If-Match`` the first answer's ETag."""
    proxy = proxies['http']
    path = urllib.parse.urlsplit(
        api.get_image(big_images['http'])['locations'][0]['url']).path
    served = len(web.requests())
    proxy.truncate_reply_at(*ranges.spread(3))
    got = ranges.Streamed(api, big_images['http'])
    assert (got.error, got.sha256) == (None, BIG_SHA)
    time.sleep(0.5)  # nginx logs a request once it is done
    requests = [r for r in web.requests()[served:] if r.path == path]
    assert [r.status for r in requests] == [200, 206, 206, 206]
    assert requests[0].range is None and requests[0].if_match is None
    stat = os.stat(web.root / path.lstrip('/'))
    etag = '"%x-%x"' % (int(stat.st_mtime), ranges.BIG)
    starts = []
    for request in requests[1:]:
        start, end = map(int, request.range[len('bytes='):].split('-'))
        assert end == ranges.BIG - 1
        assert request.if_match == etag
        starts.append(start)
    # Each restart starts past the last; the sha256 above proves each
    # started at the exact byte the client had.
    assert 0 < starts[0] < starts[1] < starts[2] < ranges.BIG


@pytest.mark.parametrize('store', STORES)
def test_spent_retries_break_the_client_connection(
        glance, api, proxies, big_images, store):
    """A break, then every restart broken too: after ``read_retries``
    restarts the client's connection breaks; it never gets a short body
    that ends cleanly."""
    proxy = proxies[store]
    first = ranges.BIG // 3
    proxy.cut_reply_at(*[first + i for i in range(ranges.RETRIES + 1)])
    got = ranges.Streamed(api, big_images[store])
    assert got.status == 200
    assert int(got.headers['content-length']) == ranges.BIG
    assert got.error is not None
    assert got.received < ranges.BIG
    assert proxy.reply_faults == ranges.RETRIES + 1
    proxy.cut_reply_at()
    # The image itself is fine: the next download is whole.
    assert ranges.Streamed(api, big_images[store]).sha256 == BIG_SHA


@pytest.mark.parametrize('store', STORES)
def test_object_replaced_before_a_restart_is_not_spliced(
        glance, api, web, s3, bucket, proxies, store):
    """The client stops reading after 8 MiB, so every buffer fills and
    Glance's read of the store waits; the object is then replaced on the
    backend and the store's connection cut at its next byte. The restart's
    ``If-Match`` gets 412: the client's connection breaks after bytes of
    the first object only."""
    size = 128 * MIB
    data = ranges.random_bytes(size)
    proxy = proxies[store]
    if store == 's3':
        image_id = add_s3_image(api, data)
    else:
        image_id = add_http_image(api, web, proxy.url, data)
        name = image_id
    other = ranges.random_bytes(size)

    def replace_and_cut():
        time.sleep(1)
        if store == 's3':
            s3.put_object(Bucket=bucket, Key=image_id, Body=other)
        else:
            path = web.root / name
            stat = os.stat(path)
            (web.root / 'new').write_bytes(other)
            os.utime(web.root / 'new', (stat.st_atime, stat.st_mtime + 10))
            os.replace(web.root / 'new', path)
        proxy.cut_reply_at(0)

    before = restarts_logged(glance, image_id)
    got = ranges.Streamed(api, image_id, keep=True, pause_after=8 * MIB,
                   on_pause=replace_and_cut)
    assert got.status == 200
    assert got.error is not None
    assert 8 * MIB <= got.received < size
    assert bytes(got.body) == data[:got.received]
    assert restarts_logged(glance, image_id) - before == 1
    log = (glance.workdir / 'glance.log').read_text(errors='replace')
    assert 'the object changed since the read began' in log


SMALL = 3 * MIB + 7


@pytest.fixture(scope='module')
def small_images(api, web, proxies):
    data = os.urandom(SMALL)
    return data, {'s3': add_s3_image(api, data),
                  'http': add_http_image(api, web, proxies['http'].url,
                                         data)}


@pytest.mark.parametrize('store', STORES)
@pytest.mark.parametrize('header, first, last', [
    ('bytes=0-0', 0, 0),
    ('bytes=%d-%d' % (SMALL - 1, SMALL - 1), SMALL - 1, SMALL - 1),
    ('bytes=1000-2001000', 1000, 2001000),
    ('bytes=-100', SMALL - 100, SMALL - 1),
    ('bytes=0-', 0, SMALL - 1),
], ids=['first-byte', 'last-byte', 'middle', 'suffix', 'open'])
def test_ranged_download_is_exact(api, small_images, store, header, first,
                                  last):
    data, images = small_images
    got = ranges.Streamed(api, images[store], headers={'Range': header},
                          keep=True)
    assert got.status == 206, bytes(got.body[:300])
    assert got.error is None
    assert got.headers['content-range'] == 'bytes %d-%d/%d' % (first, last,
                                                               SMALL)
    assert bytes(got.body) == data[first:last + 1]


@pytest.mark.parametrize('store', STORES)
def test_unsatisfiable_range_is_refused(api, small_images, store):
    _, images = small_images
    got = ranges.Streamed(api, images[store], headers={
        'Range': 'bytes=%d-' % SMALL}, keep=True)
    assert got.status == 416


@pytest.mark.parametrize('store', STORES)
def test_ranged_download_survives_a_cut(api, glance, proxies, big_images,
                                        store):
    first, last = 10 * MIB + 3, 200 * MIB - 5
    proxies[store].cut_reply_at(50 * MIB)
    got = ranges.Streamed(api, big_images[store],
                   headers={'Range': 'bytes=%d-%d' % (first, last)})
    assert got.status == 206 and got.error is None
    assert got.sha256 == hashlib.sha256(
        BIG_DATA[first:last + 1]).hexdigest()
    assert proxies[store].reply_faults == 1


def test_stock_and_sizeaware_drivers_read_each_others_images(
        tmp_path, radosgw, bucket, web):
    """One Glance database and the same backends, with the stock ``s3``
    and ``http`` drivers, then with ``sizeaware_s3`` and ``sizeaware_http``,
    then the stock ones again: every image written or added under either
    stays readable under both."""
    data = {}

    def deployment(s3_type, http_type):
        return glance_stack.Glance(
            '33', workdir=tmp_path / 'glance', default_backend='cloud',
            extra_conf=glance_conf(web.port),
            backends={
                'cloud': s3_backend(s3_type, radosgw, radosgw.endpoint,
                                    bucket),
                'web': (http_type, {}),
            })

    def check_all(server):
        api = client.GlanceClient(server.url, headers)
        for image_id, blob in data.items():
            got = api.download(image_id)
            assert got.status == 200, (server.backends, got)
            assert got.body == blob

    headers = None
    for s3_type, http_type in [('s3', 'http'),
                               ('sizeaware_s3', 'sizeaware_http'),
                               ('s3', 'http')]:
        server = deployment(s3_type, http_type)
        server.start()
        try:
            headers = headers or server.identity_headers('switch')
            api = client.GlanceClient(server.url, headers)
            blob = os.urandom(2 * MIB + 1)
            data[add_s3_image(api, blob)] = blob
            blob = os.urandom(MIB + 3)
            data[add_http_image(api, web, web.url, blob)] = blob
            check_all(server)
        finally:
            server.stop()


def add_images(server, web, proxies, size):
    """``(api, data, {store: image_id})``: a client of ``server`` in a new
    project, ``size`` random bytes, and an image of them in each store."""
    api = client.GlanceClient(server.url, server.identity_headers(
        uuid.uuid4().hex))
    data = ranges.random_bytes(size)
    return api, data, {'s3': add_s3_image(api, data),
                       'http': add_http_image(api, web, proxies['http'].url,
                                              data)}


def test_upstream_bug_stock_drivers_end_the_download_short(
        radosgw, bucket, web, proxies):
    """Negative control: the same cut under glance_store's own ``s3`` and
    ``http`` drivers. Glance has already answered 200 with the whole
    ``Content-Length``; the stock drivers do not restart, and the client's
    body ends where the store's connection broke. This is what the
    sizeaware drivers exist to prevent; the day glance_store restarts
    reads itself, this test fails and says so."""
    server = glance_stack.Glance(
        '33', default_backend='cloud',
        extra_conf=glance_conf(proxies['http'].port),
        backends={'cloud': s3_backend('s3', radosgw, proxies['s3'].url,
                                      bucket),
                  'web': ('http', {})})
    server.start()
    try:
        size = 64 * MIB
        api, _, images = add_images(server, web, proxies, size)
        for store, image_id in images.items():
            proxies[store].cut_reply_at(size // 2)
            got = ranges.Streamed(api, image_id)
            assert proxies[store].reply_faults == 1
            assert got.status == 200
            assert int(got.headers['content-length']) == size
            assert got.error is not None and got.received < size, (
                'glance_store\'s stock %s driver delivered the whole image '
                'across a broken connection: the upstream bug this test '
                'documents looks fixed' % store)
    finally:
        server.stop()


def test_glance_30_restarts_and_serves_ranges(radosgw, bucket, web,
                                               proxies):
    """glance_store 4.x (Glance 30) under the same drivers: a download
    with the store's connection reset 3 times arrives whole, one restart
    per reset, and a ranged download is exact, for both stores."""
    server = sizeaware_glance('30', radosgw, bucket, proxies)
    server.start()
    try:
        size = 64 * MIB
        api, data, images = add_images(server, web, proxies, size)
        sha = hashlib.sha256(data).hexdigest()
        for store, image_id in images.items():
            proxies[store].cut_reply_at(*ranges.spread(3, size))
            got = ranges.Streamed(api, image_id)
            assert (got.error, got.received, got.sha256) == (None, size,
                                                             sha), store
            assert proxies[store].reply_faults == 3
            assert restarts_logged(server, image_id) == 3
            got = ranges.Streamed(api, image_id, keep=True,
                           headers={'Range': 'bytes=1000-2000999'})
            assert got.status == 206, (store, bytes(got.body[:300]))
            assert bytes(got.body) == data[1000:2001000]
    finally:
        server.stop()
