"""Real servers for the functional tests, started once per session.

``SIZEAWARE_GLANCE_RELEASES`` (default ``"33 30 29"``) lists the Glance
releases every Glance-backed test runs against, with identity taken from
request headers (Glance's ``context`` filter without ``authtoken``).
``SIZEAWARE_KEYSTONE_RELEASES`` (default ``"33"``) lists the releases the
same tests also run against behind a real keystone, with real tokens of
users of two projects, and PostgreSQL databases.
``SIZEAWARE_EVENTLET_RELEASES`` (default ``"30 29"``) lists the releases
they also run against under the release's own eventlet server
(``glance-api``) instead of uwsgi, identity from headers: the two servers
hand request bodies to the app differently. With
``SIZEAWARE_WITHOUT_FILTER=1`` Glance runs without the filter, which shows
what each test guards against (most of them then fail). The download filter
runs with ``verify_download`` on (:data:`DOWNLOAD_OPTIONS`), so every
download of the suite is also verified.
"""

import contextlib
import itertools
import os
import subprocess
import uuid

import pytest

from tests.functional import client
from teststack import glance as glance_stack
from teststack import process

# The shared assertion helpers report what they compared, as tests do.
pytest.register_assert_rewrite('tests.functional.ranges')

RELEASES = os.environ.get('SIZEAWARE_GLANCE_RELEASES', '33 30 29').split()
KEYSTONE_RELEASES = os.environ.get('SIZEAWARE_KEYSTONE_RELEASES',
                                   '33').split()
EVENTLET_RELEASES = os.environ.get('SIZEAWARE_EVENTLET_RELEASES',
                                   '30 29').split()
WITH_FILTER = os.environ.get('SIZEAWARE_WITHOUT_FILTER') != '1'

#: ``(release, auth)`` under uwsgi, ``(release, auth, server)`` otherwise;
#: the last item names the deployment (``glance33-headers``,
#: ``glance30-eventlet``).
DEPLOYMENTS = ([(r, 'headers') for r in RELEASES] +
               [(r, 'keystone') for r in KEYSTONE_RELEASES] +
               [(r, 'headers', 'eventlet') for r in EVENTLET_RELEASES])
DEPLOYMENT_IDS = ['glance%s-%s' % (d[0], d[-1]) for d in DEPLOYMENTS]
#: Seconds a server waits for a silent client (eventlet's is set to it).
STALL_TIMEOUT = 4
#: ``[filter:download]`` of every deployment.
DOWNLOAD_OPTIONS = {'verify_download': True}
#: Member users of two different projects (see teststack.keystone).
KEYSTONE_USERS = ('user1', 'user2')
MIB = 1024 * 1024


def upload_mismatched(api, data, size, delta):
    """Upload ``data`` (``size`` bytes, chunked) into a new image declaring
    ``size - delta`` bytes: Glance refuses it with 400 for the size
    mismatch, the image stays queued. Returns the image's id."""
    image_id = api.create_image()
    resp = api.upload(image_id, data, size=size - delta, chunked=True,
                      piece=MIB)
    assert resp.status == 400, resp
    assert 'mismatch' in resp.text
    image = api.get_image(image_id)
    assert (image['status'], image['size']) == ('queued', None)
    return image_id


def upload_again(api, image_id, data, size):
    """The retry after :func:`upload_mismatched`, with the right size:
    accepted."""
    assert api.upload(image_id, data, size=size, chunked=True,
                      piece=MIB).status == 204


def write_image(tmp_path_factory, name, data):
    """The path (a string) of a new file holding ``data``, in a fresh
    temporary directory named after ``name``."""
    path = tmp_path_factory.mktemp(name) / 'image.raw'
    path.write_bytes(data)
    return str(path)


def needs_release(release):
    """A mark that skips a test when Glance ``release`` is not in
    ``SIZEAWARE_GLANCE_RELEASES``."""
    return pytest.mark.skipif(
        release not in RELEASES,
        reason='Glance %s is not in SIZEAWARE_GLANCE_RELEASES' % release)


def ranged_download_options(store_types):
    """``[filter:download]`` that lets a Range through to Glance for the
    images of ``store_types``. The tests list the stock type as well as
    ours, so that a Range reaches Glance for the stock driver's images too
    and a control shows what Glance answers there."""
    return dict(DOWNLOAD_OPTIONS, ranged_store_types=','.join(store_types))


def glance_on(release, server, **kwargs):
    """A (not yet started) Glance of ``release`` under ``server``
    (``'uwsgi'`` or ``'eventlet'``); ``kwargs`` go to
    :class:`teststack.glance.Glance`.

    Under eventlet a client that goes quiet is cut off after
    :data:`STALL_TIMEOUT`, as uwsgi's socket-timeout does (Glance's
    default is 900 s).
    """
    if server == 'eventlet':
        extra_conf = dict(kwargs.pop('extra_conf', None) or {})
        extra_conf['DEFAULT'] = dict(extra_conf.get('DEFAULT', {}),
                                     client_socket_timeout=STALL_TIMEOUT)
        kwargs['extra_conf'] = extra_conf
    return glance_stack.Glance(release, server=server, **kwargs)


@contextlib.contextmanager
def glance_behind_keystone(postgres, keystone, database, **kwargs):
    """A started Glance 33 behind the run's keystone, two processes of four
    threads, on its own PostgreSQL ``database``, with ``tokens`` of the
    users of :data:`KEYSTONE_USERS` (two projects); ``kwargs`` go to
    :class:`teststack.glance.Glance`."""
    if not KEYSTONE_RELEASES:
        pytest.skip('no keystone deployments in this run')
    server = glance_stack.Glance(
        '33', flavor='keystone', processes=2, threads=4,
        database_url=postgres.create_database(database),
        extra_conf=keystone.glance_conf(), **kwargs)
    server.start()
    try:
        server.keystone = keystone
        server.tokens = {user: keystone.token(user)
                         for user in KEYSTONE_USERS}
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='session')
def postgres():
    """The run's PostgreSQL (see ``teststack.process.shared``)."""
    from teststack import postgres as postgres_stack
    with process.shared('postgres', postgres_stack.Postgres) as server:
        yield server


@pytest.fixture(scope='session')
def keystone(postgres):
    """The run's Keystone (see ``teststack.process.shared``)."""
    from teststack import keystone as keystone_stack
    with process.shared('keystone', lambda: keystone_stack.Keystone(
            postgres.create_database('keystone'))) as server:
        yield server


@pytest.fixture(scope='session', params=DEPLOYMENTS, ids=DEPLOYMENT_IDS)
def glance(request):
    """A Glance of each release with sizeaware in every pipeline."""
    release, auth, *wsgi_server = request.param
    if auth == 'headers':
        wsgi_server = (wsgi_server or ['uwsgi'])[0]
        server = glance_on(release, wsgi_server, with_filter=WITH_FILTER,
                           download=DOWNLOAD_OPTIONS)
        server.start()
        yield server
        server.stop()
        return
    postgres = request.getfixturevalue('postgres')
    keystone = request.getfixturevalue('keystone')
    port = process.free_port()
    keystone.register_glance('http://127.0.0.1:%d' % port)
    server = glance_stack.Glance(
        release, with_filter=WITH_FILTER, flavor='keystone', port=port,
        download=DOWNLOAD_OPTIONS,
        database_url=postgres.create_database('glance%s' % release),
        extra_conf=keystone.glance_conf())
    server.start()
    server.keystone = keystone
    # Tokens live an hour, longer than the suite.
    server.tokens = {user: keystone.token(user) for user in KEYSTONE_USERS}
    server.next_user = itertools.cycle(KEYSTONE_USERS).__next__
    yield server
    server.stop()


def client_for(glance, user=None):
    """A client with the identity of a fresh project, or of a keystone user.

    Behind keystone, successive calls alternate between the users of two
    projects, so the suite runs with real tokens from both.
    """
    keystone = getattr(glance, 'keystone', None)
    if keystone is None:
        return client.GlanceClient(glance.url, glance.identity_headers(
            project_id=uuid.uuid4().hex))
    return client.GlanceClient(glance.url, {
        'X-Auth-Token': glance.tokens[user or glance.next_user()]})


@pytest.fixture
def api(glance):
    return client_for(glance)


@pytest.fixture(scope='session')
def radosgw():
    """A one-node Ceph cluster with radosgw: a real S3 on 127.0.0.1, and
    the run's only Ceph cluster (see ``ceph_rbd``)."""
    from teststack import ceph
    with ceph.RadosGW() as server:
        yield server


@pytest.fixture(scope='session')
def ceph_rbd(radosgw):
    """RBD pool ``images`` and its cephx client ``glance``, on the cluster
    of ``radosgw`` (see ``teststack.ceph.RBDPool``)."""
    return radosgw.add_rbd_pool('images', user='glance')


@pytest.fixture(scope='session')
def cephfs(radosgw):
    """CephFS ``cephfs`` on the cluster of ``radosgw``, its MDS started on
    first use only (see ``teststack.ceph.CephFS``); mount it with
    ``cephfs.mount(path, client)``, one cephx client per mount."""
    return radosgw.add_cephfs('cephfs')


@pytest.fixture(scope='session')
def s3(radosgw):
    import boto3
    return boto3.client('s3', endpoint_url=radosgw.endpoint,
                        aws_access_key_id=radosgw.access_key,
                        aws_secret_access_key=radosgw.secret_key,
                        region_name='us-east-1')


@pytest.fixture(scope='session')
def swift(keystone):
    """A one-node Swift behind the run's Keystone (``object-store`` in its
    catalog)."""
    from teststack import swift as swift_stack
    with swift_stack.Swift(keystone) as server:
        yield server


@pytest.fixture(scope='session')
def qcow2_with_backing(tmp_path_factory):
    """A qcow2 image whose backing file is a raw file on this host."""
    directory = tmp_path_factory.mktemp('qcow2')
    base = directory / 'base.raw'
    base.write_bytes(b'\0' * 2**20)
    image = directory / 'x.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b',
                    str(base), '-F', 'raw', str(image)], check=True)
    return image.read_bytes()
