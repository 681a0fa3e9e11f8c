"""A real Glance API on 127.0.0.1 (or another loopback address), for tests,
benchmarks and the local demo: under uwsgi, or (releases 29 and 30) under
the release's own eventlet server ``glance-api``, which many deployments of
those releases run instead.

::

    with Glance('33', with_filter=False) as glance:
        headers = glance.identity_headers('p1')
        requests.post(glance.url + '/v2/images', json={...}, headers=headers)

Each instance gets its own work directory (config, paste ini, sqlite
database, store directories, log, pid files) and its own free port.
Several API nodes of one deployment are several instances, each on a
loopback address of its own (``host='127.0.0.2'``, ``'127.0.0.3'``: Linux
routes all of 127.0.0.0/8 to loopback) and all on one PostgreSQL
``database_url``; only the first to start needs ``db_sync``.

The paste pipeline is the release's own shipped ``glance-api-paste.ini`` with
``sizeaware`` inserted right after ``context`` / ``unauthenticated-context``
and ``download`` right after ``sizeaware`` in every pipeline of
``[composite:api]`` (as an operator deploys them), plus
the test-only flavor ``sizeawaretest``: the ``keystone`` pipeline without
``authtoken``, so Glance's own ``context`` filter builds the request context
from the ``X-Identity-Status``/``X-Project-Id``/``X-User-Id``/``X-Roles``
headers (see :meth:`Glance.identity_headers`).

Only the standard library is used: Glance runs from its venv, driven by
path.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import time

from teststack import config
from teststack import paths
from teststack import process
from teststack import venvs

# The flavor whose pipeline trusts identity headers; test use only.
TEST_FLAVOR = 'sizeawaretest'
FILTER_NAME = 'sizeaware'
RESUMABLE_NAME = 'resumable'
DOWNLOAD_NAME = 'download'
DISCOVERY_NAME = 'tus_discovery'
# The PID of the process that started a Glance; see clean_stale().
OWNER_FILE = 'owner.pid'
_CONTEXT_FILTERS = ('context', 'unauthenticated-context')
# Releases that still ship a working eventlet server (``glance-api``); from
# 2025.2 on it only prints that it is gone, uwsgi is the one way to run them.
EVENTLET_RELEASES = ('29', '30')


# ---------------------------------------------------------------------------
# Configuration text


_SECTION_RE = re.compile(r'^\s*\[([^\]]+)\]\s*$')
_OPTION_RE = re.compile(r'^([^\s#;][^=:]*?)\s*[=:]\s*(.*?)\s*$')


def split_sections(text):
    """The ini as ``[(section or None, [lines])]`` in file order."""
    sections = [(None, [])]
    for line in text.splitlines():
        match = _SECTION_RE.match(line)
        if match:
            sections.append((match.group(1).strip(), [line]))
        else:
            sections[-1][1].append(line)
    return sections


def _section_options(lines):
    options = {}
    for line in lines[1:]:
        match = _OPTION_RE.match(line)
        if match:
            options[match.group(1)] = match.group(2)
    return options


def build_paste_ini(shipped: str, *, with_filter=True, filter_options=None,
                    test_flavor=TEST_FLAVOR, resumable=None,
                    download=None) -> str:
    """Derive the paste ini the stack runs from a release's shipped one.

    - with ``with_filter``: ``sizeaware`` right after ``context`` /
      ``unauthenticated-context`` in every pipeline of ``[composite:api]``,
      and ``[filter:sizeaware]`` (``use = egg:sizeaware#sizeaware`` plus
      ``filter_options``);
    - with ``resumable`` (a dict of its options) as well: ``resumable``
      right before ``sizeaware``, and its ``[filter:resumable]``;
      ``tus_discovery`` before ``authtoken``, and its section;
    - with ``with_filter``, also ``download`` right after ``sizeaware``,
      and ``[filter:download]`` (``use = egg:sizeaware#download`` plus
      ``download``, a dict of its options);
    - with ``test_flavor``: a pipeline of that name in ``[composite:api]``
      (the ``keystone`` one without ``authtoken``) and its
      ``[composite:glance-api-<flavor>]``, a copy of the keystone one.
    """
    sections = split_sections(shipped)
    names = [name for name, _ in sections]
    if 'composite:api' not in names:
        raise ValueError('paste ini has no [composite:api]')
    out = []
    keystone_pipeline = None
    for name, lines in sections:
        if name != 'composite:api':
            out.extend(lines)
            continue
        new_lines = [lines[0]]
        for line in lines[1:]:
            match = _OPTION_RE.match(line)
            if not match or match.group(1).startswith('paste.'):
                new_lines.append(line)
                continue
            flavor, pipeline = match.group(1), match.group(2).split()
            if with_filter and FILTER_NAME not in pipeline:
                where = [i for i, f in enumerate(pipeline)
                         if f in _CONTEXT_FILTERS]
                if not where:
                    raise ValueError('pipeline %r has no context filter'
                                     % flavor)
                pipeline.insert(where[0] + 1, FILTER_NAME)
            if with_filter and resumable is not None and (
                    RESUMABLE_NAME not in pipeline):
                pipeline.insert(pipeline.index(FILTER_NAME), RESUMABLE_NAME)
                if 'authtoken' in pipeline:
                    pipeline.insert(pipeline.index('authtoken'),
                                    DISCOVERY_NAME)
            if with_filter and DOWNLOAD_NAME not in pipeline:
                pipeline.insert(pipeline.index(FILTER_NAME) + 1,
                                DOWNLOAD_NAME)
            if flavor == 'keystone':
                keystone_pipeline = list(pipeline)
            new_lines.append('%s = %s' % (flavor, ' '.join(pipeline)))
        if test_flavor:
            if keystone_pipeline is None:
                raise ValueError('paste ini has no keystone pipeline')
            pipeline = [f for f in keystone_pipeline if f != 'authtoken']
            # Keep the section's trailing blank lines after the new line.
            while len(new_lines) > 1 and not new_lines[-1].strip():
                new_lines.pop()
            new_lines.append('# test only: the keystone pipeline without '
                             'authtoken; identity comes from X-* headers')
            new_lines.append('%s = %s' % (test_flavor, ' '.join(pipeline)))
            new_lines.append('')
        out.extend(new_lines)
    text = '\n'.join(out).rstrip('\n') + '\n'
    if test_flavor:
        keystone = dict(sections).get('composite:glance-api-keystone')
        if keystone is None:
            raise ValueError(
                'paste ini has no [composite:glance-api-keystone]')
        body = [line for line in keystone[1:]
                if line.strip() and not line.lstrip().startswith(('#', ';'))]
        text += '\n[composite:glance-api-%s]\n%s\n' % (test_flavor,
                                                       '\n'.join(body))
    if with_filter:
        lines = ['[filter:%s]' % FILTER_NAME, 'use = egg:sizeaware#sizeaware']
        for key, value in (filter_options or {}).items():
            lines.append('%s = %s' % (key, config.ini_value(value)))
        text += '\n' + '\n'.join(lines) + '\n'
    if with_filter:
        lines = ['[filter:%s]' % DOWNLOAD_NAME,
                 'use = egg:sizeaware#download']
        for key, value in (download or {}).items():
            lines.append('%s = %s' % (key, config.ini_value(value)))
        text += '\n' + '\n'.join(lines) + '\n'
    if with_filter and resumable is not None:
        lines = ['[filter:%s]' % RESUMABLE_NAME,
                 'use = egg:sizeaware#resumable']
        for key, value in resumable.items():
            lines.append('%s = %s' % (key, config.ini_value(value)))
        lines += ['', '[filter:%s]' % DISCOVERY_NAME,
                  'use = egg:sizeaware#tus_discovery']
        text += '\n' + '\n'.join(lines) + '\n'
    return text


def shipped_paste_ini(venv) -> pathlib.Path:
    """The ``glance-api-paste.ini`` the Glance release in ``venv`` ships."""
    venv = pathlib.Path(venv)
    candidates = [venv / 'etc' / 'glance' / 'glance-api-paste.ini']
    candidates += sorted(venv.glob(
        'lib/python3*/site-packages/etc/glance/glance-api-paste.ini'))
    candidates += sorted(venv.glob(
        'lib/python3*/site-packages/glance/**/glance-api-paste.ini'))
    candidates += sorted(venv.glob('share/**/glance-api-paste.ini'))
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError('no glance-api-paste.ini in %s' % venv)


# ---------------------------------------------------------------------------
# The server


class Glance(process.Service):
    """One Glance API server, under uwsgi or eventlet.

    :param release: key of :data:`teststack.venvs.GLANCE_RELEASES`.
    :param with_filter: deploy ``sizeaware`` and ``download`` in every
        pipeline.
    :param filter_options: extra ``[filter:sizeaware]`` lines.
    :param download: ``[filter:download]`` options (``verify_download``).
    :param resumable: deploy ``resumable`` before ``sizeaware`` with these
        ``[filter:resumable]`` options (``spool_dir`` defaults to
        ``<workdir>/spool``); None (default) leaves it out.
    :param backends: ``{name: (type, {option: value})}``; default
        ``{'fs': ('file', {})}``. File backends without
        ``filesystem_store_datadir`` get one in the work dir.
    :param default_backend: ``[glance_store] default_backend``.
    :param flavor: ``[paste_deploy] flavor``: ``sizeawaretest`` (identity
        from headers), ``default`` (unauthenticated; a policy file makes it
        usable) or ``keystone`` (give ``[keystone_authtoken]`` in
        ``extra_conf``).
    :param database_url: ``[database] connection``; default a sqlite file in
        the work dir.
    :param extra_conf: ``{section: {option: value}}`` merged last into
        glance-api.conf (``None`` removes an option).
    :param workdir: default a fresh directory under ``state_dir()/run``,
        removed by :meth:`stop` unless ``keep_workdir`` (or env
        ``SIZEAWARE_KEEP_WORKDIR=1``).
    :param server: ``'uwsgi'``, or ``'eventlet'`` for the release's own
        ``glance-api`` (releases in :data:`EVENTLET_RELEASES`). The two hand
        request bodies to the WSGI app differently (uwsgi's chunked input
        bypasses ``wsgi.input``; eventlet de-chunks into it), so the filter
        is tested under both.
    :param processes, threads: uwsgi workers; under eventlet ``processes``
        is ``workers`` (forked children) and ``threads`` is not used (each
        worker serves requests from a pool of green threads).
    :param paste_ini: a path to (or the text of) a paste ini used verbatim
        instead of the one derived from the shipped file.
    :param port: default a free port.
    :param host: the loopback address the server listens on and
        ``worker_self_reference_url`` names; another one than 127.0.0.1
        makes a second API node of the same deployment, with an address of
        its own as it would have on its own host.
    :param db_sync: run ``glance-manage db_sync`` before every start (a
        no-op on an up-to-date database); False for a node sharing a
        database another node has already brought up to date, so nodes can
        start side by side without racing to create the same tables.
    :param uwsgi_options: extra ``{option: value}`` for the uwsgi ini
        (uwsgi only).
    :param venv: run Glance from this venv instead of ``glance-<release>``.
    :param policy: a policy dict written to ``policy.json``; default
        ``{"context_is_admin": ""}`` for flavor ``default``, none otherwise.
    """

    def __init__(self, release='33', *, with_filter=True, filter_options=None,
                 backends=None, default_backend='fs', flavor=TEST_FLAVOR,
                 database_url=None, extra_conf=None, workdir=None,
                 processes=1, threads=4, paste_ini=None, port=None,
                 uwsgi_options=None, venv=None, policy=None,
                 keep_workdir=None, server='uwsgi', resumable=None,
                 download=None, host='127.0.0.1', db_sync=True):
        self.release = str(release)
        if self.release not in venvs.GLANCE_RELEASES:
            raise ValueError('unknown Glance release %r' % release)
        if server not in ('uwsgi', 'eventlet'):
            raise ValueError('unknown server %r' % server)
        if server == 'eventlet' and self.release not in EVENTLET_RELEASES:
            raise ValueError('Glance %s has no eventlet server'
                             % self.release)
        if server == 'eventlet' and uwsgi_options:
            raise ValueError('uwsgi_options given for an eventlet server')
        self.wsgi_server = server
        self.with_filter = with_filter
        self.filter_options = dict(filter_options or {})
        self.resumable = None if resumable is None else dict(resumable)
        self.download = dict(download or {})
        self.backends = dict(backends or {'fs': ('file', {})})
        self.default_backend = default_backend
        if default_backend not in self.backends:
            raise ValueError('default_backend %r is not in backends'
                             % default_backend)
        self.flavor = flavor
        self.database_url = database_url
        self.extra_conf = extra_conf or {}
        self.processes = processes
        self.threads = threads
        self.paste_ini = paste_ini
        self.uwsgi_options = dict(uwsgi_options or {})
        self.venv = pathlib.Path(venv) if venv else None
        self.policy = policy
        super().__init__('glance', workdir, keep_workdir,
                         prefix='glance-%s' % self.release)
        if self.own_workdir:
            (self.workdir / OWNER_FILE).write_text('%d\n' % os.getpid())
        self.conf_dir = self.workdir / 'etc'
        self.conf_path = self.conf_dir / 'glance-api.conf'
        self.paste_path = self.workdir / 'glance-api-paste.ini'
        self.policy_path = self.workdir / 'policy.json'
        self.uwsgi_ini = self.workdir / 'uwsgi.ini'
        self.staging_dir = self.workdir / 'staging'
        self.spool_dir = self.workdir / 'spool'
        self.tasks_dir = self.workdir / 'tasks'
        self.store_dirs = {}
        for name, (kind, options) in self.backends.items():
            if kind == 'file':
                datadir = (options or {}).get('filesystem_store_datadir')
                self.store_dirs[name] = pathlib.Path(
                    datadir or self.workdir / 'images' / name)
        self.port = port
        self.host = host
        self.db_sync = db_sync

    # -- public --------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError('Glance is not started')
        return 'http://%s:%d' % (self.host, self.port)

    def identity_headers(self, project_id, user_id='u1',
                         roles=('admin', 'member', 'reader')) -> dict:
        """Headers the ``sizeawaretest`` flavor builds the context from.

        Note that role ``admin`` makes the context an admin one, which sees
        every project's images; use ``roles=('member', 'reader')`` for a
        plain project user.
        """
        return {
            'X-Identity-Status': 'Confirmed',
            'X-Project-Id': str(project_id),
            'X-User-Id': str(user_id),
            'X-Roles': ','.join(roles),
        }

    def _start(self, timeout):
        venv = self.venv or venvs.glance_venv(self.release)
        if self.port is None:
            self.port = _free_port(self.host)
        self.write_config(venv)
        if self.db_sync:
            self.run({'glance-manage': [venvs.venv_bin(venv, 'glance-manage'),
                                        '--config-dir', self.conf_dir,
                                        'db_sync']})
        if self.wsgi_server == 'eventlet':
            # glance-api stays in the process group the service starts it in
            # (a session leader cannot make its own) and forks its workers
            # into it: stopping the group by the parent's PID stops them all.
            argv = [venvs.venv_bin(venv, 'glance-api'), '--config-dir',
                    self.conf_dir]
        else:
            argv = [venvs.venv_bin(venv, 'uwsgi'), '--ini', self.uwsgi_ini]
        (self.workdir / OWNER_FILE).write_text('%d\n' % os.getpid())
        self.spawn(argv)
        self.wait_for_http(self.url + '/versions', timeout, ok=(200, 300))

    # -- configuration -------------------------------------------------

    def glance_conf(self) -> dict:
        """glance-api.conf as ``{section: {option: value}}``."""
        backends = ','.join('%s:%s' % (name, kind)
                            for name, (kind, _) in self.backends.items())
        conf = {
            'DEFAULT': {
                'debug': True,
                'use_stderr': True,
                'enabled_backends': backends,
                'enabled_import_methods':
                    '[glance-direct,web-download,copy-image]',
                'worker_self_reference_url': self.url,
            },
            'database': {
                'connection': self.database_url or 'sqlite:///%s' % (
                    self.workdir / 'glance.sqlite'),
            },
            'paste_deploy': {
                # Flavor "default" is Glance's no-flavor pipeline.
                'flavor': None if self._unauthenticated else self.flavor,
                'config_file': self.paste_path,
            },
            'glance_store': {'default_backend': self.default_backend},
            'os_glance_staging_store': {
                'filesystem_store_datadir': self.staging_dir},
            'os_glance_tasks_store': {
                'filesystem_store_datadir': self.tasks_dir},
            'oslo_concurrency': {'lock_path': self.workdir / 'locks'},
        }
        if self.wsgi_server == 'eventlet':
            conf['DEFAULT'].update({'bind_host': self.host,
                                    'bind_port': self.port,
                                    'workers': self.processes})
        for name, (kind, options) in self.backends.items():
            section = dict(options or {})
            if kind == 'file':
                section['filesystem_store_datadir'] = self.store_dirs[name]
            conf[name] = section
        policy = self._policy()
        if policy is not None:
            conf['oslo_policy'] = {'policy_file': self.policy_path}
            if self._unauthenticated:
                conf['oslo_policy']['enforce_scope'] = False
        return config.merge_conf(conf, self.extra_conf)

    @property
    def _unauthenticated(self):
        return self.flavor in (None, '', 'default')

    def _policy(self):
        if self.policy is not None:
            return self.policy
        if self._unauthenticated:
            # The unauthenticated context has no roles and no project.
            return {'context_is_admin': ''}
        return None

    def uwsgi_conf(self, venv) -> dict:
        venv = pathlib.Path(venv)
        options = config.uwsgi_options(
            self.port, self.workdir, venv, processes=self.processes,
            threads=self.threads, request_bodies=True, host=self.host)
        options['env'] = 'OS_GLANCE_CONFIG_DIR=%s' % self.conf_dir
        if any(venv.glob('lib/python3*/site-packages/glance/wsgi/api.py')):
            options['module'] = 'glance.wsgi.api:application'
        else:  # Glance 29: no glance.wsgi module
            options['wsgi-file'] = venvs.venv_bin(venv, 'glance-wsgi-api')
        options.update(self.uwsgi_options)
        return {'uwsgi': options}

    def write_config(self, venv):
        """Write glance-api.conf, the paste ini, the policy and (under
        uwsgi) uwsgi.ini."""
        for path in [self.conf_dir, self.staging_dir, self.tasks_dir,
                     self.workdir / 'locks', *self.store_dirs.values()]:
            path.mkdir(parents=True, exist_ok=True)
        if self.paste_ini is None:
            text = build_paste_ini(
                shipped_paste_ini(venv).read_text(),
                with_filter=self.with_filter,
                filter_options=self.filter_options,
                download=self.download,
                resumable=None if self.resumable is None else dict(
                    {'spool_dir': self.spool_dir}, **self.resumable))
        elif isinstance(self.paste_ini, pathlib.PurePath) or (
                '\n' not in str(self.paste_ini)):
            text = pathlib.Path(self.paste_ini).read_text()
        else:
            text = self.paste_ini
        self.paste_path.write_text(text)
        policy = self._policy()
        if policy is not None:
            self.policy_path.write_text(json.dumps(policy, indent=1) + '\n')
        self.conf_path.write_text(config.render_ini(self.glance_conf()))
        if self.wsgi_server == 'uwsgi':
            self.uwsgi_ini.write_text(config.render_ini(self.uwsgi_conf(venv)))


def _free_port(host) -> int:
    """A TCP port nothing listens on right now at ``host``."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def clean_stale(run_dir=None) -> list:
    """Stop the Glances under ``state_dir()/run`` whose starting process is
    gone (a crashed or killed test run) and remove their work directories.

    A Glance whose owner still runs is left alone, so concurrent runs are
    safe. :returns: the directories removed.
    """
    run_dir = pathlib.Path(run_dir or paths.state_dir() / 'run')
    removed = []
    for workdir in sorted(run_dir.glob('glance-*')):
        if not workdir.is_dir():
            continue
        try:
            owner = int((workdir / OWNER_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            owner = None
        if owner is not None and process.alive(owner):
            continue
        if owner is None and time.time() - workdir.stat().st_mtime < 3600:
            continue  # being set up right now, or predates owner files
        process.stop_pidfile(workdir / 'glance.pid')
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(workdir)
    return removed
