"""Downloads through Glance with the sizeaware store drivers against the
stock ones: throughput without faults, and what each broken backend
connection costs.

Per store, three Glances (uwsgi, 1 process, 4 threads each) run side by
side on the same backend service, each with one backend: of the stock type
(``s3``, ``http``), of the sizeaware type (``sizeaware_s3``,
``sizeaware_http``), and of the sizeaware type again behind a fault proxy;
each holds its own copy of one random image. Part (a) downloads the first
two copies in turn,
``--repeat`` times (a round starts with the other driver each time), and
compares the medians: the cost of the restartable reader when nothing
breaks. Part (b) downloads the third copy, whose backend is reached
through ``tests/functional/faultproxy.py``, with the store's
connection reset ``--cuts`` times at offsets spread over the image, and
counts per cut: the requests the driver sent beyond the first (the
``Restarting`` lines of Glance's log), the bytes the backend sent beyond
the image (the proxy's count: what was in flight when the connection was
cut, plus each new answer's headers), and the bytes the client received
beyond the image (must be 0: the client's stream goes on where it was).

The stores, each a class below (:data:`STORES`; add one there):

``s3``
    radosgw (``teststack.ceph.RadosGW``), images uploaded through Glance
    with their size (multipart).
``http``
    nginx (``teststack.nginx.Nginx``), images added to Glance by location.
``swift``
    a one-node Swift 2.38 behind Keystone (``teststack.swift``, with its
    own PostgreSQL and Keystone), images uploaded through Glance with their
    size (one object each, below ``swift_store_large_object_size``).
``rbd``
    an RBD pool of a one-node Ceph (``teststack.ceph``), images uploaded
    through Glance with their size. Part (a) only: librados talks to the
    monitors and OSDs itself, there is no one connection to cut, and
    ``sizeaware_rbd`` adds ranged reads, not restarts. Its two Glances
    share one database and name their backend alike, so that both drivers
    read the same RBD image (the same data in the same place).

The client (the library's connection, ``_common.download``) reads each
download 1 MiB at a time and checks its length (and once per image, its
sha256, outside the timing). Run from the repository root with a Glance
venv's Python::

    .stack/venvs/glance-33/bin/python benchmarks/store_reads.py
    .stack/venvs/glance-33/bin/python benchmarks/store_reads.py \\
        --stores s3 --size 256M --repeat 3

Not a test: nothing is asserted about timings.
"""

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid

import _common
from _common import GiB
from _common import MiB

from tests.functional import faultproxy
from teststack import glance as glance_stack

#: Read options of the sizeaware backends: quick restarts.
READ_OPTIONS = {'read_retries': 20, 'retry_backoff': 0.01,
                'stall_timeout': 5, 'read_timeout': 30}


class S3Store:
    """radosgw; images uploaded through Glance."""

    name = 's3'
    stock, ours = 's3', 'sizeaware_s3'

    def __init__(self, args):
        from teststack import ceph
        self.rgw = ceph.RadosGW(osd_size=max(20 * GiB, 8 * args.size))
        self.rgw.start()
        import boto3
        self.s3 = boto3.client('s3', endpoint_url=self.rgw.endpoint,
                               aws_access_key_id=self.rgw.access_key,
                               aws_secret_access_key=self.rgw.secret_key,
                               region_name='us-east-1')
        self.bucket = 'bench-%s' % uuid.uuid4().hex[:12]
        self.s3.create_bucket(Bucket=self.bucket)
        rgw = urllib.parse.urlsplit(self.rgw.endpoint)
        self.target = (rgw.hostname, rgw.port)

    def backend(self, kind, proxy=None):
        """``(type, options)`` of a backend of this store."""
        options = {
            's3_store_host': proxy.url if proxy else self.rgw.endpoint,
            's3_store_access_key': self.rgw.access_key,
            's3_store_secret_key': self.rgw.secret_key,
            's3_store_bucket': self.bucket,
            's3_store_bucket_url_format': 'path',
        }
        if kind == self.ours:
            options.update(READ_OPTIONS)
        return kind, options

    def conf(self):
        return {}

    def add_image(self, api, backend, path, size, proxy=None):
        image_id = api.create()
        result = api.upload(image_id, path, size, chunked=False,
                            headers={'X-Image-Meta-Store': backend})
        if result.status != 204:
            raise RuntimeError('upload to %s: %r' % (backend, result))
        return image_id

    def stop(self):
        self.rgw.stop()


class HTTPStore:
    """nginx; images added by location (``show_multiple_locations``)."""

    name = 'http'
    stock, ours = 'http', 'sizeaware_http'

    def __init__(self, args):
        from teststack import nginx
        self.web = nginx.Nginx().start()
        self.target = ('127.0.0.1', self.web.port)
        self.ports = {self.web.port}

    def backend(self, kind, proxy=None):
        if proxy is not None:
            self.ports.add(proxy.port)
        return kind, dict(READ_OPTIONS) if kind == self.ours else {}

    def conf(self):
        return {'DEFAULT': {'show_multiple_locations': True},
                'import_filtering_opts': {
                    'allowed_hosts': '[127.0.0.1]',
                    'allowed_ports': '[%s]' % ','.join(
                        map(str, sorted(self.ports)))}}

    def add_image(self, api, backend, path, size, proxy=None):
        image_id = api.create()
        target = self.web.root / image_id
        if not target.exists():
            target.hardlink_to(path)
        base = proxy.url if proxy else self.web.url
        status, body = _common.request(
            api.url, 'PATCH', '/v2/images/%s' % image_id,
            headers=dict(api.identity, **{
                'Content-Type':
                    'application/openstack-images-v2.1-json-patch'}),
            body=json.dumps([{'op': 'add', 'path': '/locations/-', 'value': {
                'url': '%s/%s' % (base, image_id),
                'metadata': {'store': backend}}}]).encode())
        if status != 200:
            raise RuntimeError('add location: %s %r' % (status, body))
        return image_id

    def stop(self):
        self.web.stop()


class SwiftStore:
    """Swift behind Keystone; images uploaded through Glance."""

    name = 'swift'
    stock, ours = 'swift', 'sizeaware_swift'

    def __init__(self, args):
        from teststack import keystone as keystone_stack
        from teststack import postgres as postgres_stack
        from teststack import swift as swift_stack
        self.services = []
        try:
            postgres = postgres_stack.Postgres().start()
            self.services.append(postgres)
            self.keystone = keystone_stack.Keystone(
                postgres.create_database('keystone')).start()
            self.services.append(self.keystone)
            self.swift = swift_stack.Swift(self.keystone).start()
            self.services.append(self.swift)
        except BaseException:
            self.stop()
            raise
        swift = urllib.parse.urlsplit(self.swift.url)
        self.target = (swift.hostname, swift.port)

    def backend(self, kind, proxy=None):
        endpoint = None
        if proxy is not None:
            # The storage URL of Glance's account, through the proxy.
            endpoint = proxy.url + urllib.parse.urlsplit(
                self._storage_url()).path
        options = self.swift.glance_backend('bench', endpoint=endpoint)
        if kind == self.ours:
            options.update(READ_OPTIONS)
        return kind, options

    def _storage_url(self):
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        from teststack import keystone as keystone_stack
        user = self.keystone.users[keystone_stack.GLANCE_USER]
        auth = v3.Password(
            auth_url=self.keystone.auth_url,
            username=keystone_stack.GLANCE_USER, password=user['password'],
            project_name=user['project_name'],
            user_domain_name=keystone_stack.DOMAIN,
            project_domain_name=keystone_stack.DOMAIN)
        return session.Session(auth=auth).get_endpoint(
            service_type='object-store', interface='public')

    def conf(self):
        return {}

    add_image = S3Store.add_image

    def stop(self):
        for service in reversed(self.services):
            service.stop()


class RBDStore:
    """An RBD pool; images uploaded through Glance; no fault part."""

    name = 'rbd'
    stock, ours = 'rbd', 'sizeaware_rbd'
    #: No proxy can stand between librados and the cluster: part (a) only.
    target = None
    #: Both drivers read one RBD image.
    one_image = True

    def __init__(self, args):
        from teststack import ceph
        self.cluster = ceph.RadosGW(osd_size=max(20 * GiB, 8 * args.size))
        self.cluster.start()
        self.pool = self.cluster.add_rbd_pool('images', user='glance')

    def backend(self, kind, proxy=None):
        return kind, {'rbd_store_pool': self.pool.name,
                      'rbd_store_user': self.pool.user,
                      'rbd_store_ceph_conf': self.pool.conf_path}

    def conf(self):
        return {}

    add_image = S3Store.add_image

    def stop(self):
        self.cluster.stop()


STORES = {'s3': S3Store, 'http': HTTPStore, 'swift': SwiftStore,
          'rbd': RBDStore}


def download(url, identity, image_id, size, digest=False):
    """Seconds to download ``image_id`` whole; raises unless exactly
    ``size`` bytes came (and, with ``digest``, returns the sha256 too)."""
    sha = hashlib.sha256() if digest else None
    status, seconds, got = _common.download(
        url, '/v2/images/%s/file' % image_id, identity,
        on_piece=sha.update if digest else None, timeout=300)
    if status != 200:
        raise RuntimeError('download of %s: %d' % (image_id, status))
    if got != size:
        raise RuntimeError('download of %s: %d of %d bytes'
                           % (image_id, got, size))
    return (seconds, sha.hexdigest()) if digest else seconds


def restarts_logged(server):
    text = (server.workdir / 'glance.log').read_text(errors='replace')
    return len(re.findall(r'Restarting the read of ', text))


def bench_store(store, args, image, image_sha):
    proxy = None
    backends = {'stock': store.backend(store.stock),
                'ours': store.backend(store.ours)}
    if store.target is not None:
        proxy = faultproxy.FaultProxy(store.target).__enter__()
        backends['cut'] = store.backend(store.ours, proxy)
    # One Glance per backend: Glance maps an added location to the first
    # backend whose URL prefix it starts with, and every http backend's
    # prefix is "http".
    # A store with ``one_image``: the Glances share one database and name
    # their backend alike, so one image, stored once, is read through each
    # driver (the same data in the same place for both).
    one_image = getattr(store, 'one_image', False)
    workdir = database = None
    if one_image:
        workdir = tempfile.mkdtemp(prefix='store-reads-')
        database = 'sqlite:///%s/glance.sqlite' % workdir
    servers = {}
    tables = []
    try:
        for backend, (kind, options) in backends.items():
            name = store.name if one_image else backend
            servers[backend] = glance_stack.Glance(
                args.release, default_backend=name, processes=1,
                threads=4, backends={name: (kind, options)},
                database_url=database, extra_conf=store.conf())
            servers[backend].start()
        images = {}
        for backend, server in servers.items():
            name = store.name if one_image else backend
            api = _common.GlanceAPI(server.url,
                                    server.identity_headers('bench'))
            if one_image and images:
                images[backend] = next(iter(images.values()))
            else:
                images[backend] = store.add_image(
                    api, name, image, args.size,
                    proxy if backend == 'cut' else None)
            if api.get(images[backend])['stores'] != name:
                raise RuntimeError('image not in %s' % name)
            _, sha = download(server.url, api.identity, images[backend],
                              args.size, digest=True)
            if sha != image_sha:
                raise RuntimeError('%s: sha256 %s' % (backend, sha))
        # (a) no faults
        times = {'stock': [], 'ours': []}
        order = ['stock', 'ours']
        for round_no in range(args.repeat):
            for backend in order[round_no % 2:] + order[:round_no % 2]:
                server = servers[backend]
                seconds = download(server.url,
                                   server.identity_headers('bench'),
                                   images[backend], args.size)
                times[backend].append(seconds)
                _common.log('%s %-5s %.2f s  %.0f MiB/s' % (
                    store.name, backend, seconds, args.size / MiB / seconds))
        stock = _common.median(times['stock'])
        rows = []
        for backend, kind in (('stock', store.stock), ('ours', store.ours)):
            seconds = _common.median(times[backend])
            rows.append([kind, '%.2f' % seconds,
                         '%.0f' % (args.size / MiB / seconds),
                         '%.3f' % (stock / seconds),
                         ' '.join('%.2f' % t for t in times[backend])])
        tables.append(_common.table(
            ['driver', 's', 'MiB/s', 'throughput vs stock', 'all runs (s)'],
            rows, title='(a) %s: Glance %s, %s image, no faults, medians of '
                        '%d' % (store.name, args.release,
                                _common.human(args.size), args.repeat)))
        # (b) cuts
        rows = []
        for cuts in args.cuts if proxy is not None else ():
            offsets = [args.size // 10 + i * (args.size * 8 // 10) // cuts
                       for i in range(cuts)]
            server = servers['cut']
            before = restarts_logged(server)
            proxy.reset_counters()
            proxy.cut_reply_at(*offsets)
            seconds, sha = download(server.url,
                                    server.identity_headers('bench'),
                                    images['cut'], args.size, digest=True)
            if sha != image_sha or proxy.reply_faults != cuts:
                raise RuntimeError('cut download: sha %s, %d cuts fired'
                                   % (sha, proxy.reply_faults))
            time.sleep(0.5)
            restarts = restarts_logged(server) - before
            extra = proxy.replied - args.size
            rows.append([cuts, restarts, '%.2f' % (restarts / cuts),
                         proxy.connections,
                         _common.human(max(extra, 0)),
                         _common.human(max(extra, 0) // cuts), 0,
                         '%.2f' % seconds])
        tables.extend(rows and [_common.table(
            ['cuts', 'extra requests', 'per cut', 'new connections',
             'backend bytes beyond the image', 'per cut',
             'bytes re-sent to the client', 's (with sha256)'],
            rows, title='(b) %s: sizeaware_%s, connection reset at spread '
                        'offsets' % (store.name, store.name))])
    finally:
        for server in servers.values():
            server.stop()
        if proxy is not None:
            proxy.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--stores', default=','.join(STORES),
                        help='comma-separated, of: %s (default all)'
                             % ', '.join(STORES))
    parser.add_argument('--size', type=_common.parse_size, default='1G',
                        help='image size (default 1G)')
    parser.add_argument('--repeat', type=int, default=5,
                        help='downloads per driver in part (a) (default 5)')
    parser.add_argument('--cuts', default='1,5',
                        help='cut counts of part (b) (default 1,5)')
    parser.add_argument('--release', default='33')
    parser.add_argument('--image', help='image file (default a random file '
                                        'in /tmp, kept)')
    args = parser.parse_args(argv)
    args.cuts = [int(c) for c in args.cuts.split(',') if c.strip()]
    image = _common.image_file(args.size, args.image)
    sha = hashlib.sha256()
    with open(image, 'rb') as src:
        while data := src.read(8 * MiB):
            sha.update(data)
    tables = []
    for name in args.stores.split(','):
        store = STORES[name.strip()](args)
        try:
            tables += bench_store(store, args, image, sha.hexdigest())
        finally:
            store.stop()
    _common.print_tables(tables)
    return 0


if __name__ == '__main__':
    sys.exit(main())
