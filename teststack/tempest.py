"""Tempest (47.0.0) and glance-tempest-plugin against the keystone stack.

::

    images = ImageServer().start()          # qcow2 + raw on 127.0.0.1
    extras = glance_extras(images.port)     # backends, extra_conf for Glance
    glance = Glance('33', flavor='keystone', port=port,
                    database_url=pg.create_database('glance'),
                    backends=extras['backends'],
                    extra_conf=merge(ks.glance_conf(), extras['extra_conf']))
    glance.start()
    load_metadefs(glance, glance_venv)
    tempest = Tempest(ks, images)
    result = tempest.run_tests(r'^tempest\\.api\\.image')
    result.counts    # {'passed': 56, 'skipped': 19, 'failed': 0, 'flaky': 0}

Tempest runs from its own venv (``tempest``: tempest, glance-tempest-plugin
and, once this repo ships a ``tempest.test_plugins`` entry point, this repo
installed editable with ``--no-deps``, as a plugin is installed into
tempest's environment: its plugin must run with tempest alone). Results are
read from ``stestr last --subunit``, parsed by ``scripts/subunit_to_json.py``
inside that venv: one outcome per test id, with the skip reason or the
traceback.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

from teststack import config
from teststack import paths
from teststack import process
from teststack import venvs

REQUIREMENTS = ['tempest==47.0.0', 'glance-tempest-plugin']
IMAGE_QCOW2 = 'cirros-like.qcow2'
IMAGE_RAW = 'cirros-like.raw'
SUBUNIT_SCRIPT = (pathlib.Path(__file__).parent / 'scripts'
                  / 'subunit_to_json.py')


def repo_has_tempest_plugin(repo=paths.REPO) -> bool:
    setup_cfg = pathlib.Path(repo) / 'setup.cfg'
    return setup_cfg.is_file() and (
        'tempest.test_plugins' in setup_cfg.read_text())


def tempest_venv(plugins=None) -> pathlib.Path:
    """The venv ``tempest``.

    :param plugins: checkouts of tempest plugins installed editable
        without their dependencies (``--no-deps``): a plugin needs tempest
        only, and this repo's would otherwise bring glance_store,
        keystoneauth1 and the like into tempest's venv and hide an import
        of them. By default this repo, once its setup.cfg declares a
        ``tempest.test_plugins`` entry point (the hook for our own plugin).
    """
    if plugins is None:
        plugins = [paths.REPO] if repo_has_tempest_plugin() else []
    return venvs.ensure_venv('tempest', REQUIREMENTS, editable=plugins,
                             editable_deps=False)


# ---------------------------------------------------------------------------
# Images served over HTTP for web-download


def make_images(directory, size_mib=1) -> dict:
    """A small raw image and its qcow2 made by ``qemu-img`` in
    ``directory``; returns ``{'raw': path, 'qcow2': path}``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / IMAGE_RAW
    qcow2 = directory / IMAGE_QCOW2
    if not raw.is_file():
        # Not all zeros, so qcow2 has clusters to store; deterministic.
        block = bytes(range(256)) * 4096
        with open(raw, 'wb') as fh:
            for _ in range(size_mib):
                fh.write(block)
    if not qcow2.is_file():
        qemu_img = shutil.which('qemu-img')
        if not qemu_img:
            raise RuntimeError('qemu-img not found: install Debian\'s '
                               '"qemu-utils" (see bindep.txt)')
        subprocess.run([qemu_img, 'convert', '-f', 'raw', '-O', 'qcow2',
                        str(raw), str(qcow2) + '.tmp'], check=True,
                       capture_output=True)
        os.replace(str(qcow2) + '.tmp', qcow2)
    return {'raw': raw, 'qcow2': qcow2}


class ImageServer(process.Service):
    """A static HTTP server for the test images on 127.0.0.1
    (``python -m http.server``); the images are kept between runs in
    ``state_dir()/images-http``."""

    def __init__(self, workdir=None, port=None):
        super().__init__('image-http',
                         workdir or paths.state_dir() / 'images-http')
        self.port = port
        self.images = {}

    def url(self, kind='qcow2') -> str:
        return 'http://127.0.0.1:%d/%s' % (self.port,
                                           self.images[kind].name)

    def _start(self, timeout):
        self.images = make_images(self.workdir / 'www')
        if self.port is None:
            self.port = process.free_port()
        self.spawn([sys.executable, '-m', 'http.server', '--bind',
                    '127.0.0.1', '--directory', self.workdir / 'www',
                    self.port])
        self.wait_for_http(self.url('raw'), timeout, ok=(200,))


# ---------------------------------------------------------------------------
# What Glance needs for the image tests


def glance_extras(image_port, allowed_ports=(80, 443)) -> dict:
    """Keyword arguments for :class:`teststack.glance.Glance` that the
    tempest image tests need: a second file store ``fs2`` (copy-image) and
    web-download allowed from 127.0.0.1 on ``image_port``. Merge
    ``extra_conf`` with :meth:`Keystone.glance_conf`.

    The stores have weights (``fs`` first) so that an image's ``stores``
    always reads ``fs,fs2``: Glance lists its locations in the database's
    row order, which PostgreSQL changes when a location row is updated a
    second after the other was written (on a loaded machine), and
    tempest's ``wait_for_image_imported_to_stores`` compares the string
    with the sorted store ids, waiting out its timeout otherwise."""
    ports = sorted(set(allowed_ports) | {int(image_port)})
    return {
        'backends': {'fs': ('file', {}), 'fs2': ('file', {})},
        'default_backend': 'fs',
        'extra_conf': {
            # ListOpts with bounds: the brackets are required.
            'import_filtering_opts': {
                'allowed_hosts': '[127.0.0.1]',
                'allowed_ports': '[%s]' % ','.join(map(str, ports)),
            },
            'fs': {'store_description': 'first file store', 'weight': '2'},
            'fs2': {'store_description': 'second file store',
                    'weight': '1'},
        },
    }


def load_metadefs(glance, glance_venv):
    """``glance-manage db_load_metadefs`` with the release's shipped
    metadefs (the metadef tests list namespaces such as OS::Compute::*)."""
    glance_venv = pathlib.Path(glance_venv)
    found = [glance_venv / 'etc' / 'glance' / 'metadefs'] + sorted(
        glance_venv.glob('lib/python3*/site-packages/etc/glance/metadefs'))
    metadefs = next((p for p in found if p.is_dir()), None)
    if metadefs is None:
        raise FileNotFoundError('no metadefs in %s' % glance_venv)
    glance.run({'glance-manage-metadefs': [
        venvs.venv_bin(glance_venv, 'glance-manage'), '--config-dir',
        glance.conf_dir, 'db_load_metadefs', metadefs]})


# ---------------------------------------------------------------------------
# Tempest itself


_STATUS = {'success': 'passed', 'skip': 'skipped', 'fail': 'failed',
           'xfail': 'passed', 'uxsuccess': 'failed'}
_ATTRS_RE = re.compile(r'\[[^\]]*\]$')


def base_test_id(test_id) -> str:
    """The test id without tempest's ``[id-...,smoke]`` attributes."""
    return _ATTRS_RE.sub('', test_id)


def _failed_name(test_id) -> str:
    """The test (or, for a failed ``setUpClass``, the class) a failure
    names."""
    name = base_test_id(test_id)
    if name.startswith('setUpClass (') and name.endswith(')'):
        name = name[len('setUpClass ('):-1]
    return name


class Result:
    """Outcome of one ``tempest run``.

    :ivar tests: ``{test_id: {'outcome': passed|skipped|failed|flaky,
        'status': subunit status, 'reason': skip reason or the last lines
        of the traceback, 'duration': s}}``.
    :ivar counts: ``{'passed', 'skipped', 'failed', 'flaky'}``.
    """

    def __init__(self, tests, returncode, elapsed, log_path):
        self.tests = tests
        self.returncode = returncode
        self.elapsed = elapsed
        self.log_path = log_path
        self._count()

    def _count(self):
        self.counts = {'passed': 0, 'skipped': 0, 'failed': 0, 'flaky': 0}
        for test in self.tests.values():
            self.counts[test['outcome']] += 1

    def retry_regex(self) -> str:
        """A ``--regex`` selecting this run's failed tests (a failed
        ``setUpClass`` selects its class), or '' when none failed."""
        names = []
        for test_id in self.ids('failed'):
            name = re.escape(_failed_name(test_id))
            # A class's tests follow a dot; a test's id ends or has [attrs].
            names.append(name + (r'\.' if test_id.startswith('setUpClass')
                                 else r'(\[|$)'))
        return '^(%s)' % '|'.join(names) if names else ''

    def absorb_retry(self, retry):
        """Mark a failed test whose retry passed as ``flaky``: neither
        passed nor failed.

        Some tempest tests time out on a loaded 2-core machine (glance
        imports to several stores); one retry tells that from a test the
        deployment really breaks. The reason keeps the first failure.
        """
        retried = {}
        for test_id, info in retry.tests.items():
            retried.setdefault(base_test_id(test_id), []).append(info)
        for test_id, info in self.tests.items():
            if info['outcome'] != 'failed':
                continue
            name = _failed_name(test_id)
            outcomes = [i['outcome'] for key, infos in retried.items()
                        if key == name or key.startswith(name + '.')
                        for i in infos]
            if outcomes and 'failed' not in outcomes:
                info['outcome'] = 'flaky'
                info['reason'] = 'passed when run again alone, after: %s' % (
                    info.get('reason') or 'a failure')
        self._count()

    def ids(self, outcome) -> list:
        return sorted(t for t, v in self.tests.items()
                      if v['outcome'] == outcome)

    def summary(self) -> str:
        return ('%(passed)d passed, %(failed)d failed, %(skipped)d skipped, '
                '%(flaky)d flaky' % self.counts)

    def to_dict(self) -> dict:
        return {'counts': self.counts, 'returncode': self.returncode,
                'elapsed_s': round(self.elapsed, 1),
                'log': str(self.log_path), 'tests': self.tests}


def _reason(status, details):
    if status == 'skip':
        return (details.get('reason') or '').strip()
    if _STATUS.get(status) == 'failed' or status not in _STATUS:
        text = details.get('traceback') or details.get('reason') or ''
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return '\n'.join(lines[-6:])
    return ''


class Tempest(process.Service):
    """A tempest workspace configured for the keystone stack; :meth:`start`
    makes it, :meth:`stop` removes it unless it is to be kept.

    :param keystone: a started :class:`teststack.keystone.Keystone`.
    :param images: a started :class:`ImageServer`.
    :param extra_conf: ``{section: {option: value}}`` merged last into
        tempest.conf.
    :param plugins: passed to :func:`tempest_venv`.
    """

    def __init__(self, keystone, images, workdir=None, extra_conf=None,
                 plugins=None, venv=None, keep_workdir=None):
        super().__init__('tempest', workdir, keep_workdir)
        self.keystone = keystone
        self.images = images
        self.extra_conf = extra_conf or {}
        self.plugins = plugins
        self.venv = pathlib.Path(venv) if venv else None
        self.workspace = self.workdir / 'workspace'
        self.conf_path = self.workspace / 'etc' / 'tempest.conf'

    def tempest_conf(self) -> dict:
        admin = self.keystone.admin
        conf = {
            'DEFAULT': {
                'log_dir': self.workspace / 'logs',
                'log_file': 'tempest.log',
                'debug': True,
            },
            'oslo_concurrency': {'lock_path': self.workdir / 'tempest_lock'},
            'auth': {
                'use_dynamic_credentials': True,
                'create_isolated_networks': False,
                'admin_username': admin['username'],
                'admin_password': admin['password'],
                'admin_project_name': admin['project_name'],
                'admin_domain_name': admin['user_domain_name'],
                'admin_system': 'all',
                'default_credentials_domain_name': 'Default',
            },
            'identity': {
                'uri_v3': self.keystone.auth_url,
                'auth_version': 'v3',
                'region': 'RegionOne',
                'v3_endpoint_type': 'public',
            },
            'identity-feature-enabled': {
                'api_v2_admin': False,
            },
            'service_available': {
                'glance': True, 'nova': False, 'cinder': False,
                'neutron': False, 'swift': False, 'horizon': False,
                'keystone': True,
            },
            'image': {
                'region': 'RegionOne',
                'endpoint_type': 'publicURL',
                'http_image': self.images.url('raw'),
                'http_qcow2_image': self.images.url('qcow2'),
                'build_timeout': 120,
            },
            'image-feature-enabled': {
                'api_v2': True,
                'import_image': True,
                'os_glance_reserved': True,
                'manage_locations': False,
            },
            'enforce_scope': {'glance': True, 'keystone': True},
            'validation': {'run_validation': False},
            'glance_api': {'system_scope_supported': False},
        }
        return config.merge_conf(conf, self.extra_conf)

    def _start(self, timeout):
        """``tempest init`` the workspace and write tempest.conf."""
        self.venv = self.venv or tempest_venv(self.plugins)
        if not (self.workspace / '.stestr.conf').is_file():
            self.run({'tempest-init': [
                venvs.venv_bin(self.venv, 'tempest'), 'init',
                '--workspace-path', self.workdir / 'workspaces.yaml',
                self.workspace]}, timeout=timeout)
        (self.workspace / 'logs').mkdir(exist_ok=True)
        self.write_conf()

    def configure(self, extra_conf) -> 'Tempest':
        """Merge ``extra_conf`` into the tempest.conf of later runs (e.g.
        ``{'sizeaware': {'enabled': True}}`` for this repo's plugin)."""
        self.extra_conf = config.merge_conf(self.extra_conf, extra_conf)
        if self.conf_path.parent.is_dir():
            self.write_conf()
        return self

    def write_conf(self):
        self.conf_path.write_text(config.render_ini(self.tempest_conf()))

    def run_tests(self, regex, concurrency=2, name=None, timeout=3600,
                  exclude_regex=None) -> Result:
        """``tempest run --regex REGEX --concurrency N`` in the workspace;
        the per-test outcomes come from ``stestr last --subunit``."""
        name = name or 'run-%d' % int(time.time())
        log_path = self.workdir / ('%s.log' % name)
        argv = [str(venvs.venv_bin(self.venv, 'tempest')), 'run',
                '--regex', regex, '--concurrency', str(concurrency)]
        if exclude_regex:
            argv += ['--exclude-regex', exclude_regex]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('OS_', 'TEMPEST_'))}
        env['TEMPEST_CONFIG_DIR'] = str(self.conf_path.parent)
        env['TEMPEST_CONFIG'] = self.conf_path.name
        started = time.monotonic()
        with open(log_path, 'wb') as log:
            # Its own session: a timeout stops tempest and its workers.
            proc = subprocess.Popen(argv, stdout=log,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    cwd=self.workspace, env=env,
                                    start_new_session=True)
            try:
                returncode = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                process.stop_group(proc.pid, 10)
                returncode = proc.wait()
        elapsed = time.monotonic() - started
        subunit_path = self.workdir / ('%s.subunit' % name)
        tests = self._last_results(env, subunit_path)
        result = Result(tests, returncode, elapsed, log_path)
        (self.workdir / ('%s.json' % name)).write_text(
            json.dumps(result.to_dict(), indent=1, sort_keys=True))
        process.log('tempest %s: %s in %.0f s (%s)' % (regex, result.summary(),
                                                elapsed, subunit_path))
        return result

    def _last_results(self, env, subunit_path) -> dict:
        with open(subunit_path, 'wb') as out:
            proc = subprocess.run(
                [str(venvs.venv_bin(self.venv, 'stestr')), 'last',
                 '--subunit'], stdout=out, stderr=subprocess.PIPE,
                cwd=self.workspace, env=env, timeout=300)
        # stestr last exits non-zero when the run had failures.
        if subunit_path.stat().st_size == 0:
            raise RuntimeError('stestr last gave no subunit stream: %s'
                               % proc.stderr.decode(errors='replace'))
        with open(subunit_path, 'rb') as stream:
            parsed = subprocess.run(
                [str(venvs.venv_python(self.venv)), str(SUBUNIT_SCRIPT)],
                stdin=stream, capture_output=True, timeout=300)
        if parsed.returncode:
            raise RuntimeError('parsing subunit failed:\n%s'
                               % parsed.stderr.decode(errors='replace'))
        tests = {}
        for test_id, raw in json.loads(parsed.stdout).items():
            status = raw['status']
            if status in ('exists', 'inprogress'):
                outcome = 'failed'   # started but never finished
            else:
                outcome = _STATUS.get(status, 'failed')
            tests[test_id] = {
                'outcome': outcome, 'status': status,
                'reason': _reason(status, raw['details']),
                'duration': raw['duration'],
            }
        return tests


# ---------------------------------------------------------------------------
# Comparing two runs


def compare(without, with_filter) -> dict:
    """Compare the run without the filter with the run with it.

    ``regressions`` are the tests that passed without the filter and
    failed, were skipped or are missing with it; ``new_failures`` the tests
    that fail with the filter and did not run or were skipped without it
    (such as this repo's own plugin's, which run only with the filter). A
    flaky test (see :meth:`Result.absorb_retry`) is neither: it is listed
    under ``flaky``.
    """
    def by_base(result):
        return {base_test_id(t): v for t, v in result.tests.items()}
    before, after = by_base(without), by_base(with_filter)
    regressions = {}
    for test_id, info in sorted(before.items()):
        if info['outcome'] != 'passed':
            continue
        other = after.get(test_id)
        if other is None or other['outcome'] not in ('passed', 'flaky'):
            regressions[test_id] = {
                'outcome': other['outcome'] if other else 'missing',
                'reason': other['reason'] if other else ''}

    new_failures = {
        test_id: {'outcome': info['outcome'], 'reason': info['reason']}
        for test_id, info in sorted(after.items())
        if info['outcome'] == 'failed' and test_id not in regressions
        and (before.get(test_id) or {}).get('outcome') != 'failed'}

    def listing(outcome):
        out = {}
        for test_id in sorted(set(before) | set(after)):
            a, b = before.get(test_id), after.get(test_id)
            if (a and a['outcome'] == outcome) or (
                    b and b['outcome'] == outcome):
                out[test_id] = {
                    'without_filter': (a['outcome'], a['reason'])
                    if a else ('missing', ''),
                    'with_filter': (b['outcome'], b['reason'])
                    if b else ('missing', ''),
                }
        return out
    return {
        'without_filter': dict(without.counts,
                               elapsed_s=round(without.elapsed, 1)),
        'with_filter': dict(with_filter.counts,
                            elapsed_s=round(with_filter.elapsed, 1)),
        'regressions': regressions,
        'new_failures': new_failures,
        'skipped': listing('skipped'),
        'failed': listing('failed'),
        'flaky': listing('flaky'),
    }

