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
uwsgi, then one openstacksdk
script run inside the Keystone venv creates:

- project ``service`` and user ``glance`` with roles ``service`` and
  ``admin`` on it (the account Glance's ``authtoken`` uses);
- projects ``sizeaware-p1`` and ``sizeaware-p2``, each with one user
  (``user1``, ``user2``) holding ``member`` (and so ``reader``) on it, for
  cross-project tests.

:meth:`Keystone.register_glance` creates (or moves) the ``image`` service's
public/internal/admin endpoints; call it with the URL Glance will have
before Glance starts (choose its port first).

Only the standard library is used here: Keystone runs from its venv,
driven by path.
"""

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from teststack import config
from teststack import process
from teststack import venvs

REQUIREMENTS = ['keystone==30.0.0', 'uwsgi', 'psycopg2-binary',
                'openstacksdk']
REGION = 'RegionOne'
DOMAIN = 'Default'
ADMIN = 'admin'
SERVICE_PROJECT = 'service'
GLANCE_USER = 'glance'
# user -> project: plain project members.
MEMBERS = {'user1': 'sizeaware-p1', 'user2': 'sizeaware-p2'}


def _log(msg):
    print('[teststack] %s' % msg, file=sys.stderr, flush=True)


def keystone_venv() -> pathlib.Path:
    """The venv ``keystone``: Keystone, uwsgi, psycopg2 and openstacksdk."""
    return venvs.ensure_venv('keystone', REQUIREMENTS)


# Run inside the Keystone venv: JSON in on stdin, JSON out on stdout.
_SETUP_SCRIPT = r'''
import json
import sys

from openstack import connection

cfg = json.load(sys.stdin)
conn = connection.Connection(
    auth_type='password',
    auth=dict(auth_url=cfg['auth_url'], username=cfg['admin']['username'],
              password=cfg['admin']['password'],
              project_name=cfg['admin']['project_name'],
              user_domain_name='Default', project_domain_name='Default'),
    identity_api_version='3', region_name=cfg['region'],
    interface='public')
ident = conn.identity
out = {'projects': {}, 'users': {}, 'roles': {}}


# Keystone answers each request in ~0.2 s (no token cache): list by name
# (one request) rather than find_* (a GET by id first), and remember roles.
roles = {}


def role(name):
    if name in roles:
        return roles[name]
    found = next(iter(ident.roles(name=name)), None)
    if found is None:
        found = ident.create_role(name=name)
    out['roles'][name] = found.id
    roles[name] = found
    return found


def project(name):
    found = next(iter(ident.projects(name=name, domain_id='default')), None)
    if found is None:
        found = ident.create_project(name=name, domain_id='default',
                                     description='sizeaware test stack')
    out['projects'][name] = found.id
    return found


def user(name, password, proj, roles):
    found = next(iter(ident.users(name=name, domain_id='default')), None)
    if found is None:
        found = ident.create_user(name=name, password=password,
                                  domain_id='default',
                                  default_project_id=proj.id)
    else:
        ident.update_user(found, password=password)
    for r in roles:
        ident.assign_project_role_to_user(proj, found, role(r))
    out['users'][name] = {'id': found.id, 'project_id': proj.id}
    return found


if cfg.get('users'):
    for r in ('admin', 'member', 'reader', 'service'):
        role(r)
    for name, spec in cfg['users'].items():
        user(name, spec['password'], project(spec['project_name']),
             spec['roles'])

if cfg.get('glance_url'):
    svc = None
    for s in ident.services():
        if s.type == 'image':
            svc = s
    if svc is None:
        svc = ident.create_service(name='glance', type='image',
                                   description='Glance (sizeaware stack)')
    existing = {e.interface: e for e in ident.endpoints(service_id=svc.id)}
    for interface in ('public', 'internal', 'admin'):
        ep = existing.get(interface)
        if ep is None:
            ident.create_endpoint(service_id=svc.id, interface=interface,
                                  url=cfg['glance_url'],
                                  region_id=cfg['region'])
        elif ep.url != cfg['glance_url']:
            ident.update_endpoint(ep, url=cfg['glance_url'])
    out['image_service_id'] = svc.id

json.dump(out, sys.stdout)
'''


class Keystone(process.Service):
    """One Keystone API server under uwsgi.

    :param database_url: ``[database] connection`` (an empty database).
    :param workdir: default a fresh directory under ``state_dir()/run``,
        removed by :meth:`stop` unless ``keep_workdir`` (or env
        ``SIZEAWARE_KEEP_WORKDIR=1``).
    :param port: default a free port.
    :param cache: keystone's cache in process memory
        (``dogpile.cache.memory``). Without it every request validates its
        token from the database (~0.2 s of CPU each here, 13x slower; the
        RBAC tests of glance-tempest-plugin make thousands). A per-process
        cache is only coherent in one process: with ``cache`` uwsgi runs
        one process (``processes`` is ignored).
    :param processes, threads: uwsgi workers.
    :param extra_conf: ``{section: {option: value}}`` merged last into
        keystone.conf.
    :param venv: run Keystone from this venv instead of ``keystone``.
    """

    def __init__(self, database_url, workdir=None, *, port=None,
                 cache=True, processes=2, threads=1, extra_conf=None,
                 venv=None, keep_workdir=None):
        self.database_url = database_url
        self.port = port
        self.cache = cache
        self.processes = 1 if cache else processes
        self.threads = threads
        self.extra_conf = extra_conf or {}
        self.venv = pathlib.Path(venv) if venv else None
        self._init_workdir('keystone-', workdir, keep_workdir)
        self.conf_dir = self.workdir / 'etc'
        self.conf_path = self.conf_dir / 'keystone.conf'
        self.uwsgi_ini = self.workdir / 'uwsgi.ini'
        self.server = process.Server('keystone', [], self.workdir)
        self.log_path = self.server.log_path
        self.glance_url = None
        self.ids = {}
        # Credentials: name -> {password, project_name, roles, and after
        # start() user_id, project_id}.
        self.users = {
            ADMIN: {'password': secrets.token_hex(8), 'project_name': ADMIN,
                    'roles': ['admin']},
            GLANCE_USER: {'password': secrets.token_hex(8),
                          'project_name': SERVICE_PROJECT,
                          'roles': ['service', 'admin']},
        }
        for name, proj in MEMBERS.items():
            self.users[name] = {'password': secrets.token_hex(8),
                                'project_name': proj,
                                'roles': ['member']}

    # -- public --------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError('Keystone is not started')
        return 'http://127.0.0.1:%d' % self.port

    @property
    def auth_url(self) -> str:
        return self.url + '/v3'

    @property
    def admin(self) -> dict:
        """The bootstrap admin's credentials (role admin on project admin
        and on the system), as keystoneauth/openstacksdk keywords."""
        return self.credentials(ADMIN)

    def credentials(self, user) -> dict:
        spec = self.users[user]
        return {'auth_url': self.auth_url, 'username': user,
                'password': spec['password'],
                'project_name': spec['project_name'],
                'user_domain_name': DOMAIN, 'project_domain_name': DOMAIN}

    def start(self, timeout=120) -> 'Keystone':
        if self.running:
            return self
        started = time.monotonic()
        venv = self.venv or keystone_venv()
        if self.port is None:
            self.port = process.free_port()
        self.write_config(venv)
        steps = time.monotonic()
        owner = ['--keystone-user', _user_name(), '--keystone-group',
                 _group_name()]
        # The key repositories do not need the database: make them while
        # db_sync runs (2 cores).
        self._manage_all(venv, [['db_sync'], ['fernet_setup', *owner],
                                ['credential_setup', *owner]])
        admin = self.users[ADMIN]
        self._manage(venv, 'bootstrap',
                     '--bootstrap-password', admin['password'],
                     '--bootstrap-username', ADMIN,
                     '--bootstrap-project-name', ADMIN,
                     '--bootstrap-role-name', 'admin',
                     '--bootstrap-service-name', 'keystone',
                     '--bootstrap-region-id', REGION,
                     '--bootstrap-admin-url', self.auth_url,
                     '--bootstrap-internal-url', self.auth_url,
                     '--bootstrap-public-url', self.auth_url)
        manage_s = time.monotonic() - steps
        self.server.argv = [str(venvs.venv_bin(venv, 'uwsgi')), '--ini',
                            str(self.uwsgi_ini)]
        self.server.start()
        try:
            process.wait_for_http(self.auth_url, timeout=timeout,
                                  proc=self.server.proc, ok=(200,))
        except RuntimeError as exc:
            tail = self.server.log_tail(60)
            self.stop()
            raise RuntimeError('Keystone did not start: %s\n--- %s ---\n%s'
                               % (exc, self.log_path, tail)) from None
        setup = time.monotonic()
        try:
            users = {name: spec for name, spec in self.users.items()
                     if name != ADMIN}
            out = self._sdk(venv, users=users, glance_url=self.glance_url)
            self._record(out)
            self.users[ADMIN]['user_id'] = self._lookup_admin_id()
        except BaseException:
            self.stop()
            raise
        _log('Keystone up at %s in %.1f s (keystone-manage %.1f s, users '
             '%.1f s; %s)' % (self.url, time.monotonic() - started,
                              manage_s, time.monotonic() - setup,
                              self.workdir))
        return self

    def stop(self):
        self.server.stop()
        process.stop_pidfile(self.workdir / 'uwsgi.pid')
        self._remove_workdir()

    def register_glance(self, glance_url):
        """Create (or move) the ``image`` service's endpoints to
        ``glance_url``. Before :meth:`start` the URL is remembered and
        registered by it."""
        self.glance_url = glance_url.rstrip('/')
        if self.running:
            out = self._sdk(self.venv or keystone_venv(),
                            glance_url=self.glance_url)
            self._record(out)

    def glance_conf(self) -> dict:
        """glance-api.conf sections for flavor ``keystone`` against this
        Keystone (merge into Glance's ``extra_conf``)."""
        glance = self.users[GLANCE_USER]
        return {
            'keystone_authtoken': {
                'www_authenticate_uri': self.auth_url,
                'auth_url': self.auth_url,
                'auth_type': 'password',
                'username': GLANCE_USER,
                'password': glance['password'],
                'project_name': SERVICE_PROJECT,
                'user_domain_name': DOMAIN,
                'project_domain_name': DOMAIN,
                'region_name': REGION,
                'interface': 'public',
                'service_token_roles_required': True,
                'service_token_roles': 'service',
                # No memcached: keystonemiddleware caches in process.
                'memcached_servers': None,
            },
            'oslo_policy': {
                'enforce_new_defaults': True,
                'enforce_scope': True,
            },
        }

    def token(self, user, project=None, *, system=False) -> str:
        """A token for ``user``: scoped to ``project`` (default the user's
        own project) or, with ``system``, to the system."""
        spec = self.users[user]
        if system:
            scope = {'system': {'all': True}}
        else:
            scope = {'project': {'name': project or spec['project_name'],
                                 'domain': {'name': DOMAIN}}}
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': user, 'domain': {'name': DOMAIN},
                'password': spec['password']}}},
            'scope': scope}}
        token, _ = self._post_token(body)
        return token

    def token_and_catalog(self, user, project=None):
        """``(token, catalog)`` from a project-scoped password auth."""
        spec = self.users[user]
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': user, 'domain': {'name': DOMAIN},
                'password': spec['password']}}},
            'scope': {'project': {'name': project or spec['project_name'],
                                  'domain': {'name': DOMAIN}}}}}
        token, data = self._post_token(body)
        return token, data['token'].get('catalog', [])

    # -- configuration -------------------------------------------------

    def keystone_conf(self) -> dict:
        conf = {
            'DEFAULT': {'debug': False},
            'database': {'connection': self.database_url},
            'token': {'provider': 'fernet'},
            'fernet_tokens': {
                'key_repository': self.workdir / 'fernet-keys'},
            'fernet_receipts': {
                'key_repository': self.workdir / 'fernet-keys'},
            'credential': {
                'key_repository': self.workdir / 'credential-keys'},
            'cache': ({'enabled': True,
                       'backend': 'dogpile.cache.memory'}
                      if self.cache else {'enabled': False}),
            'identity': {'password_hash_rounds': 4},
            'oslo_policy': {'enforce_new_defaults': True,
                            'enforce_scope': True},
        }
        return config.merge_conf(conf, self.extra_conf)

    def uwsgi_conf(self, venv) -> dict:
        options = config.uwsgi_options(
            self.port, self.workdir, venv, processes=self.processes,
            threads=self.threads)
        options['module'] = 'keystone.wsgi.api:application'
        options['env'] = 'OS_KEYSTONE_CONFIG_DIR=%s' % self.conf_dir
        return {'uwsgi': options}

    def write_config(self, venv):
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name in ('fernet-keys', 'credential-keys'):
            path = self.workdir / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(mode=0o700)
        self.conf_path.write_text(config.render_ini(self.keystone_conf()))
        self.uwsgi_ini.write_text(config.render_ini(self.uwsgi_conf(venv)))

    # -- internals -----------------------------------------------------

    def _manage(self, venv, *args):
        self._manage_all(venv, [list(args)])

    def _manage_all(self, venv, commands):
        """Run ``keystone-manage`` commands concurrently; each logs to
        ``keystone-manage-<command>.log``."""
        running = []
        for args in commands:
            log_path = self.workdir / ('keystone-manage-%s.log' % args[0])
            argv = [str(venvs.venv_bin(venv, 'keystone-manage')),
                    '--config-file', str(self.conf_path), *args]
            with open(log_path, 'ab') as log:
                running.append((args[0], log_path, subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, cwd=self.workdir)))
        failed = []
        for name, log_path, proc in running:
            try:
                proc.wait(300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode:
                tail = '\n'.join(log_path.read_text(
                    errors='replace').splitlines()[-40:])
                failed.append('keystone-manage %s failed (exit %s):\n%s'
                              % (name, proc.returncode, tail))
        if failed:
            raise RuntimeError('\n'.join(failed))

    def _sdk(self, venv, users=None, glance_url=None) -> dict:
        admin = self.users[ADMIN]
        cfg = {'auth_url': self.auth_url, 'region': REGION,
               'admin': {'username': ADMIN, 'password': admin['password'],
                         'project_name': ADMIN},
               'users': users or {}, 'glance_url': glance_url}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        proc = subprocess.run(
            [str(venvs.venv_python(venv)), '-c', _SETUP_SCRIPT],
            input=json.dumps(cfg), capture_output=True, text=True,
            timeout=300, cwd=self.workdir, env=env)
        if proc.returncode:
            raise RuntimeError('keystone setup script failed (exit %d):\n%s'
                               % (proc.returncode, proc.stderr[-4000:]))
        return json.loads(proc.stdout)

    def _record(self, out):
        for name, ids in out.get('users', {}).items():
            self.users[name].update(user_id=ids['id'],
                                    project_id=ids['project_id'])
        for key in ('projects', 'roles'):
            self.ids.setdefault(key, {}).update(out.get(key, {}))
        if 'image_service_id' in out:
            self.ids['image_service'] = out['image_service_id']

    def _lookup_admin_id(self):
        body = {'auth': {'identity': {'methods': ['password'], 'password': {
            'user': {'name': ADMIN, 'domain': {'name': DOMAIN},
                     'password': self.users[ADMIN]['password']}}},
            'scope': {'project': {'name': ADMIN,
                                  'domain': {'name': DOMAIN}}}}}
        _, data = self._post_token(body)
        self.users[ADMIN]['project_id'] = data['token']['project']['id']
        return data['token']['user']['id']

    def _post_token(self, body):
        req = urllib.request.Request(
            self.auth_url + '/auth/tokens', data=json.dumps(body).encode(),
            headers={'Content-Type': 'application/json'}, method='POST')
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return (resp.headers['X-Subject-Token'],
                        json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            raise RuntimeError('token request failed: %s %s' % (
                exc.code, exc.read()[:500])) from None


def _user_name():
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


def _group_name():
    import grp
    return grp.getgrgid(os.getegid()).gr_name


if __name__ == '__main__':  # pragma: no cover - manual use
    from teststack import postgres
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres.Postgres())
        ks = stack.enter_context(Keystone(pg.create_database('keystone')))
        ks.register_glance('http://127.0.0.1:%d' % process.free_port())
        token, catalog = ks.token_and_catalog('user1')
        print(json.dumps(catalog, indent=1))
