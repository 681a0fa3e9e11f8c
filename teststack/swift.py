"""A one-node Swift (2.38) on 127.0.0.1, behind the stack's Keystone.

::

    with Swift(keystone) as swift:
        Glance('33', flavor='keystone', extra_conf=keystone.glance_conf(),
               default_backend='swift', backends={'swift': (
                   'swift', swift.glance_backend('glance'))})

Its processes: ``memcached`` (the proxy's cache of account and container
information), the account, container and object servers (one process each,
``workers = 0``) on one directory device, and the proxy server with
``authtoken keystoneauth`` in its pipeline (``operator_roles = admin,
member``, ``account_autocreate = true``). The rings have one replica and
one device each, built with ``swift-ring-builder``. :meth:`Swift.start`
registers the ``object-store`` service in Keystone at
``http://127.0.0.1:PORT/v1/AUTH_$(project_id)s``: an account is a Keystone
project, and Glance's service user (``glance``, role ``admin`` on project
``service``) owns the account of project ``service``.

Swift and keystonemiddleware come from PyPI into the venv ``swift``;
``memcached`` is Debian's (see ``bindep.txt``).
"""

import os
import pwd
import secrets

from teststack import config
from teststack import keystone as keystone_mod
from teststack import process
from teststack import venvs

REQUIREMENTS = ['swift==2.38.*', 'keystonemiddleware']
SERVERS = ('account', 'container', 'object')
DEVICE = 'd1'
#: Seconds the proxy waits for a client's next bytes (Swift's default).
CLIENT_TIMEOUT = 60
PIPELINE = ('catch_errors gatekeeper healthcheck proxy-logging cache '
            'listing_formats authtoken keystoneauth copy dlo versioned_writes '
            'proxy-logging proxy-server')
# Filters of the pipeline that are Swift's own: section -> entry point.
SWIFT_FILTERS = {'catch_errors': 'catch_errors', 'gatekeeper': 'gatekeeper',
                 'healthcheck': 'healthcheck',
                 'proxy-logging': 'proxy_logging', 'cache': 'memcache',
                 'listing_formats': 'listing_formats', 'copy': 'copy',
                 'dlo': 'dlo', 'versioned_writes': 'versioned_writes'}


def swift_venv():
    """The venv ``swift``: Swift and keystonemiddleware."""
    return venvs.ensure_venv('swift', REQUIREMENTS)


class Swift(process.Service):
    """One Swift cluster on one node, its accounts those of ``keystone``.

    :param keystone: the :class:`teststack.keystone.Keystone` that
        authenticates its users and lists it in its catalog.
    :param workdir: default a fresh directory under ``state_dir()/run``,
        removed by :meth:`stop` unless ``keep_workdir`` (or env
        ``SIZEAWARE_KEEP_WORKDIR=1``).
    :param venv: run Swift from this venv instead of ``swift``.
    """

    def __init__(self, keystone, workdir=None, *, venv=None,
                 keep_workdir=None):
        super().__init__('swift', workdir, keep_workdir)
        self.keystone = keystone
        self.venv = venv
        self.etc = self.workdir / 'etc'
        self.devices = self.workdir / 'srv'
        self.ports = {}

    @property
    def url(self) -> str:
        """The proxy server's root URL."""
        return 'http://127.0.0.1:%d' % self.ports['proxy']

    def _start(self, timeout):
        self.venv = self.venv or swift_venv()
        self.ports = {name: process.free_port()
                      for name in ('memcached',) + SERVERS + ('proxy',)}
        (self.devices / DEVICE).mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(exist_ok=True)
        (self.etc / 'swift.conf').write_text(config.render_ini({
            'swift-hash': {'swift_hash_path_suffix': secrets.token_hex(8)}}))
        self._build_rings()
        self.spawn(['memcached', '-l', '127.0.0.1', '-U', '0', '-m', '16',
                    '-p', self.ports['memcached'],
                    '-u', pwd.getpwuid(os.geteuid()).pw_name],
                   name='memcached')
        for server in SERVERS:
            app = {'use': 'egg:swift#%s' % server}
            if server == 'object':
                # No object-updater runs: a container update the object
                # server gives up on (after 1 s by default) would never
                # reach the listing a segmented object is read through.
                app['container_update_timeout'] = 30
            self._server(server, self.ports[server], {
                'pipeline:main': {'pipeline': '%s-server' % server},
                'app:%s-server' % server: app})
        self._proxy('proxy', self.ports['proxy'], CLIENT_TIMEOUT)
        for server in SERVERS:
            self.wait_for_port(self.ports[server], timeout)
        self.wait_for_http(self.url + '/healthcheck', timeout, ok=(200,))
        self.keystone.register_service(
            'object-store', 'swift', self.url + '/v1/AUTH_$(project_id)s')

    def add_proxy(self, client_timeout) -> str:
        """Start one more proxy server on the same cluster, waiting at most
        ``client_timeout`` seconds for a client's next bytes (not in the
        catalog: point a client at it with the path of a storage URL).
        :returns: its root URL."""
        port = process.free_port()
        self._proxy('proxy-%d' % port, port, client_timeout)
        url = 'http://127.0.0.1:%d' % port
        self.wait_for_http(url + '/healthcheck', 60, ok=(200,))
        return url

    def glance_backend(self, container, *, large_object_size=None,
                       chunk_size=None, endpoint=None) -> dict:
        """Options of a Glance backend of type ``swift`` (or a driver
        configured like it) storing in ``container`` of the account of
        Glance's service user, made on the first upload.

        :param large_object_size, chunk_size:
            ``swift_store_large_object_size`` and
            ``swift_store_large_object_chunk_size`` (glance_store's "MB" of
            1000 x 1024 bytes); default glance_store's.
        :param endpoint: ``swift_store_endpoint``, a storage URL used
            instead of the catalog's.
        """
        user = self.keystone.users[keystone_mod.GLANCE_USER]
        return {
            'swift_store_auth_address': self.keystone.auth_url,
            'swift_store_auth_version': 3,
            'swift_store_user': '%s:%s' % (user['project_name'],
                                           keystone_mod.GLANCE_USER),
            'swift_store_key': user['password'],
            'swift_store_container': container,
            'swift_store_create_container_on_put': True,
            'swift_store_large_object_size': large_object_size,
            'swift_store_large_object_chunk_size': chunk_size,
            'swift_store_endpoint': endpoint,
        }

    # -- steps --------------------------------------------------------------

    def _build_rings(self):
        """The account, container and object rings: 2^10 partitions, one
        replica, the one device; the three side by side, step by step."""
        builder = venvs.venv_bin(self.venv, 'swift-ring-builder')
        for step in ('create', 'add', 'rebalance'):
            commands = {}
            for server in SERVERS:
                args = {'create': [10, 1, 1],
                        'add': ['r1z1-127.0.0.1:%d/%s' % (self.ports[server],
                                                          DEVICE), 100],
                        'rebalance': []}[step]
                commands['ring-%s-%s' % (server, step)] = [
                    builder, self.etc / ('%s.builder' % server), step, *args]
            self.run(commands)

    def _server(self, name, port, sections):
        """Write ``<name>-server.conf`` and start ``swift-<kind>-server``
        with it, logging to the console (there is no syslog here)."""
        conf = self.etc / ('%s-server.conf' % name)
        conf.write_text(config.render_ini(dict({'DEFAULT': {
            'bind_ip': '127.0.0.1',
            'bind_port': port,
            'workers': 0,
            'swift_dir': self.etc,
            'devices': self.devices,
            'mount_check': False,
        }}, **sections)))
        kind = name if name in SERVERS else 'proxy'
        self.spawn([venvs.venv_bin(self.venv, 'swift-%s-server' % kind),
                    conf, '-v'], name=name)

    def _proxy(self, name, port, client_timeout):
        sections = {
            'pipeline:main': {'pipeline': PIPELINE},
            'app:proxy-server': {'use': 'egg:swift#proxy',
                                 'account_autocreate': True,
                                 'client_timeout': client_timeout},
            'filter:authtoken': dict(
                self.keystone.authtoken_conf(),
                **{'paste.filter_factory':
                   'keystonemiddleware.auth_token:filter_factory',
                   'delay_auth_decision': True}),
            'filter:keystoneauth': {'use': 'egg:swift#keystoneauth',
                                    'operator_roles': 'admin, member'},
        }
        for section, entry in SWIFT_FILTERS.items():
            sections['filter:%s' % section] = {'use': 'egg:swift#%s' % entry}
        sections['filter:cache']['memcache_servers'] = (
            '127.0.0.1:%d' % self.ports['memcached'])
        # A segmented object is read one segment a second after the tenth
        # by default: 6 s for a 17-segment image.
        sections['filter:dlo']['rate_limit_segments_per_sec'] = 0
        self._server(name, port, sections)
