"""A real Keystone (30.0.0) under uwsgi on 127.0.0.1, on PostgreSQL.

::

    with Postgres() as pg, Keystone(pg.create_database('keystone')) as ks:
        glance_port = free_port()
        ks.register_glance('http://127.0.0.1:%d' % glance_port)
        Glance('33', flavor='keystone', port=glance_port,
               extra_conf=ks.glance_conf(), ...)
        token = ks.token('user1')

:meth:`Keystone.start` writes ``keystone.conf`` (fernet tokens, an
in-process cache, 4 password hash rounds), runs ``keystone-manage``
``db_sync``, ``fernet_setup``, ``credential_setup`` and ``bootstrap`` (user
``admin`` with ``admin`` on project ``admin`` and on the system), starts
uwsgi, then ``scripts/keystone_setup.py`` (openstacksdk, in the Keystone
venv) creates:

- project ``service`` and user ``glance`` with roles ``service`` and
  ``admin`` on it (the account Glance's ``authtoken`` uses);
- projects ``sizeaware-p1`` and ``sizeaware-p2``, each with one user
  (``user1``, ``user2``) holding ``member`` (and so ``reader``) on it, for
  cross-project tests.

:meth:`Keystone.register_service` creates (or moves) a service's
public/internal/admin endpoints (:meth:`Keystone.register_glance` those of
``image``).
"""

import grp
import json
import os
import pathlib
import pwd
import secrets
import subprocess
import urllib.error
import urllib.request

from teststack import config
from teststack import process
from teststack import venvs

REQUIREMENTS = ['keystone==30.0.0', 'uwsgi', 'psycopg2-binary',
                'openstacksdk']
SETUP_SCRIPT = pathlib.Path(__file__).parent / 'scripts' / 'keystone_setup.py'
REGION = 'RegionOne'
DOMAIN = 'Default'
ADMIN = 'admin'
SERVICE_PROJECT = 'service'
GLANCE_USER = 'glance'
# user -> project: plain project members.
MEMBERS = {'user1': 'sizeaware-p1', 'user2': 'sizeaware-p2'}


def keystone_venv() -> pathlib.Path:
    """The venv ``keystone``: Keystone, uwsgi, psycopg2 and openstacksdk."""
    return venvs.ensure_venv('keystone', REQUIREMENTS)


class Keystone(process.Service):
    """One Keystone API server under uwsgi, one process with an in-memory
    cache (``dogpile.cache.memory``: without it every request validates its
    token from the database, ~0.2 s of CPU each here, and the RBAC tests of
    glance-tempest-plugin make thousands; the cache is only coherent in one
    process).

    :param database_url: ``[database] connection`` (an empty database).
    :param workdir: default a fresh directory under ``state_dir()/run``,
        removed by :meth:`stop` unless ``keep_workdir`` (or env
        ``SIZEAWARE_KEEP_WORKDIR=1``).
    :param port: default a free port.
    :param venv: run Keystone from this venv instead of ``keystone``.
    """

    SHARED = ('port', 'users', 'venv')

    def __init__(self, database_url, workdir=None, *, port=None, venv=None,
                 keep_workdir=None):
        super().__init__('keystone', workdir, keep_workdir)
        self.database_url = database_url
        self.port = port
        self.venv = str(venv) if venv else None
        self.conf_path = self.workdir / 'etc' / 'keystone.conf'
        # name -> {password, project_name, roles}
        self.users = {
            ADMIN: {'password': secrets.token_hex(8), 'project_name': ADMIN,
                    'roles': ['admin']},
            GLANCE_USER: {'password': secrets.token_hex(8),
                          'project_name': SERVICE_PROJECT,
                          'roles': ['service', 'admin']},
        }
        for name, project in MEMBERS.items():
            self.users[name] = {'password': secrets.token_hex(8),
                                'project_name': project, 'roles': ['member']}

    @property
    def url(self) -> str:
        return 'http://127.0.0.1:%d' % self.port

    @property
    def auth_url(self) -> str:
        return self.url + '/v3'

    @property
    def admin(self) -> dict:
        """The bootstrap admin's credentials (role admin on project admin
        and on the system), as keystoneauth/openstacksdk keywords."""
        return {'auth_url': self.auth_url, 'username': ADMIN,
                'password': self.users[ADMIN]['password'],
                'project_name': ADMIN, 'user_domain_name': DOMAIN,
                'project_domain_name': DOMAIN}

    def _start(self, timeout):
        self.venv = self.venv or str(keystone_venv())
        if self.port is None:
            self.port = process.free_port()
        self.write_config()
        manage = [venvs.venv_bin(self.venv, 'keystone-manage'),
                  '--config-file', self.conf_path]
        owner = ['--keystone-user', pwd.getpwuid(os.geteuid()).pw_name,
                 '--keystone-group', grp.getgrgid(os.getegid()).gr_name]
        # The key repositories do not need the database: made while
        # db_sync runs.
        self.run({'keystone-manage-db_sync': manage + ['db_sync'],
                  'keystone-manage-fernet_setup':
                      manage + ['fernet_setup'] + owner,
                  'keystone-manage-credential_setup':
                      manage + ['credential_setup'] + owner})
        self.run({'keystone-manage-bootstrap': manage + [
            'bootstrap', '--bootstrap-password', self.users[ADMIN]['password'],
            '--bootstrap-username', ADMIN, '--bootstrap-project-name', ADMIN,
            '--bootstrap-role-name', 'admin',
            '--bootstrap-service-name', 'keystone',
            '--bootstrap-region-id', REGION,
            '--bootstrap-admin-url', self.auth_url,
            '--bootstrap-internal-url', self.auth_url,
            '--bootstrap-public-url', self.auth_url]})
        self.spawn([venvs.venv_bin(self.venv, 'uwsgi'), '--ini',
                    self.workdir / 'uwsgi.ini'])
        self.wait_for_http(self.auth_url, timeout, ok=(200,))
        self._setup({name: spec for name, spec in self.users.items()
                     if name != ADMIN})

    def register_glance(self, glance_url):
        """Create (or move) the ``image`` service's endpoints to
        ``glance_url``."""
        self.register_service('image', 'glance', glance_url.rstrip('/'))

    def register_service(self, service_type, name, url):
        """Create the service ``service_type`` (named ``name``) unless it
        exists, and its public, internal and admin endpoints at ``url``
        (moved there if they exist)."""
        self._setup(service={'type': service_type, 'name': name, 'url': url})

    def glance_conf(self) -> dict:
        """glance-api.conf sections for flavor ``keystone`` against this
        Keystone (merge into Glance's ``extra_conf``)."""
        return {
            'keystone_authtoken': self.authtoken_conf(),
            'oslo_policy': {
                'enforce_new_defaults': True,
                'enforce_scope': True,
            },
        }

    def authtoken_conf(self) -> dict:
        """keystonemiddleware's ``authtoken`` options for a service of this
        Keystone, validating tokens as the ``glance`` service user."""
        return {
            'www_authenticate_uri': self.auth_url,
            'auth_url': self.auth_url,
            'auth_type': 'password',
            'username': GLANCE_USER,
            'password': self.users[GLANCE_USER]['password'],
            'project_name': SERVICE_PROJECT,
            'user_domain_name': DOMAIN,
            'project_domain_name': DOMAIN,
            'region_name': REGION,
            'interface': 'public',
            'service_token_roles_required': True,
            'service_token_roles': 'service',
            # No memcached: keystonemiddleware caches in process.
            'memcached_servers': None,
        }

    def token(self, user) -> str:
        """A token for ``user``, scoped to the user's own project."""
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': user, 'domain': {'name': DOMAIN},
                'password': self.users[user]['password']}}},
            'scope': {'project': {'name': self.users[user]['project_name'],
                                  'domain': {'name': DOMAIN}}}}}
        req = urllib.request.Request(
            self.auth_url + '/auth/tokens', data=json.dumps(body).encode(),
            headers={'Content-Type': 'application/json'}, method='POST')
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.headers['X-Subject-Token']
        except urllib.error.HTTPError as exc:
            raise RuntimeError('token request failed: %s %s' % (
                exc.code, exc.read()[:500])) from None

    def write_config(self):
        keys = {name: self.workdir / name
                for name in ('fernet-keys', 'credential-keys')}
        for path in keys.values():
            path.mkdir(mode=0o700, exist_ok=True)
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(config.render_ini({
            'DEFAULT': {'debug': False},
            'database': {'connection': self.database_url},
            'token': {'provider': 'fernet'},
            'fernet_tokens': {'key_repository': keys['fernet-keys']},
            'fernet_receipts': {'key_repository': keys['fernet-keys']},
            'credential': {'key_repository': keys['credential-keys']},
            'cache': {'enabled': True, 'backend': 'dogpile.cache.memory'},
            'identity': {'password_hash_rounds': 4},
            'oslo_policy': {'enforce_new_defaults': True,
                            'enforce_scope': True},
        }))
        options = config.uwsgi_options(self.port, self.workdir, self.venv,
                                       processes=1, threads=1)
        options['module'] = 'keystone.wsgi.api:application'
        options['env'] = 'OS_KEYSTONE_CONFIG_DIR=%s' % self.conf_path.parent
        (self.workdir / 'uwsgi.ini').write_text(
            config.render_ini({'uwsgi': options}))

    def _setup(self, users=None, service=None):
        """Run ``scripts/keystone_setup.py`` in the Keystone venv."""
        cfg = {'auth_url': self.auth_url, 'region': REGION,
               'admin': dict(self.users[ADMIN], username=ADMIN),
               'users': users, 'service': service}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        proc = subprocess.run(
            [str(venvs.venv_python(self.venv)), str(SETUP_SCRIPT)],
            input=json.dumps(cfg), capture_output=True, text=True,
            timeout=300, cwd=self.workdir, env=env)
        if proc.returncode:
            raise RuntimeError('%s failed (exit %d):\n%s' % (
                SETUP_SCRIPT.name, proc.returncode, proc.stderr[-4000:]))
