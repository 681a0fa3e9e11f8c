"""A throwaway one-node Ceph cluster with radosgw (S3) on 127.0.0.1.

Used by the functional tests and the benchmarks of Glance's S3 store::

    with RadosGW() as rgw:
        s3 = boto3.client('s3', endpoint_url=rgw.endpoint,
                          aws_access_key_id=rgw.access_key,
                          aws_secret_access_key=rgw.secret_key,
                          region_name='us-east-1')

Four daemons, each started in the foreground by :class:`process.Server` in
its own session, with its PID in ``<workdir>/<name>.pid``, and stopped by
that PID: ``ceph-mon`` (``mon.a``), ``ceph-mgr`` (``mgr.x``), ``ceph-osd``
(``osd.0``, BlueStore on a sparse file) and ``radosgw`` (``client.rgw.x``,
beast on ``127.0.0.1:<port>``). Authentication is cephx; every key is made
here and handed to ``ceph-mon --mkfs``, so no ``ceph auth`` round trip is
needed. Every path a daemon or a client writes (data, keyrings, logs, admin
sockets, pid files, crash dumps) is under the work directory and every
command gets ``--conf`` explicitly, so clusters never collide with one
another or with a system-wide ``/etc/ceph``.

Needs the Debian packages ``ceph-mon ceph-osd ceph-mgr radosgw ceph-common``
(see ``bindep.txt``); this module itself uses the standard library only.
"""

import base64
import contextlib
import json
import os
import pathlib
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from . import paths
from . import process

GiB = 1024 ** 3

MON = 'a'
MGR = 'x'
OSD = 0
RGW = 'rgw.x'

# Longest admin socket path we let a daemon create (sun_path is 108 bytes).
_MAX_SOCKET_PATH = 100


class CephError(RuntimeError):
    """A Ceph command failed or the cluster did not become ready."""


def make_key() -> str:
    """A new cephx secret, as ``ceph-authtool --gen-key`` prints it.

    The encoding of a ``CryptoKey``: type (1 = AES), creation time (seconds,
    nanoseconds), length, then 16 random bytes.
    """
    secret = os.urandom(16)
    header = struct.pack('<hiih', 1, int(time.time()), 0, len(secret))
    return base64.b64encode(header + secret).decode('ascii')


def _keyring_text(name, key, caps=None) -> str:
    lines = ['[%s]' % name, '\tkey = %s' % key]
    for service, cap in (caps or {}).items():
        lines.append('\tcaps %s = "%s"' % (service, cap))
    return '\n'.join(lines) + '\n'


def _write(path, text, mode=0o600):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def pid_alive(pid) -> bool:
    """True if ``pid`` runs and is no zombie."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class RadosGW:
    """A one-node Ceph cluster serving S3 on ``127.0.0.1:<port>``.

    :param workdir: where everything goes; a fresh directory under
        ``<state dir>/run`` by default. A work directory left by an earlier
        cluster is reused: its daemons are stopped (by their pid files) and
        its cluster data is made anew.
    :param port: the radosgw port; a free one by default.
    :param osd_size: the size of the OSD's sparse block file.
    :param uid: the S3 user created by :meth:`start`.
    """

    def __init__(self, workdir=None, port=None, osd_size=20 * GiB,
                 uid='sizeaware'):
        if workdir is None:
            run = paths.state_dir() / 'run'
            run.mkdir(parents=True, exist_ok=True)
            workdir = tempfile.mkdtemp(prefix='ceph-', dir=run)
        self.workdir = pathlib.Path(workdir).resolve()
        self.port = port or process.free_port()
        self.osd_size = int(osd_size)
        self.uid = uid
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        self.access_key = None
        self.secret_key = None
        self.fsid = None
        self.mon_ports = None
        self.conf_path = self.workdir / 'ceph.conf'
        self.admin_keyring = self.workdir / 'ceph.client.admin.keyring'
        self.timings = {}
        self._servers = {}
        self._run_dir = self.workdir / 'run'
        self.env = None
        self.health = None
        self.osd_uuid = None

    # -- public API -------------------------------------------------------

    def start(self, timeout=120) -> 'RadosGW':
        """Make the cluster and wait until S3 answers; returns ``self``."""
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        try:
            self._prepare()
            self._mark('prepare', t0)
            self._start_mon(deadline)
            self._mark('mon', t0)
            self._start_osd_mgr(deadline)
            self._mark('osd_mgr', t0)
            self._start_rgw(deadline)
            self._mark('rgw', t0)
            self._wait_osd_up(deadline)
            self._wait_http(deadline)
            self._mark('rgw_http', t0)
            self._create_user()
            self._mark('user', t0)
            self._wait_health(deadline)
            self._mark('ready', t0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, remove=False, timeout=30.0):
        """Stop every daemon by its own PID (rgw, mgr, osd, then mon).

        Data and logs stay unless ``remove`` is true.
        """
        for name in ('rgw', 'mgr', 'osd', 'mon'):
            server = self._servers.pop(name, None)
            if server is not None:
                server.stop(timeout)
            else:
                # A daemon of an earlier run of this work directory.
                process.stop_pidfile(self.workdir / ('%s.pid' % name),
                                     timeout)
        if remove:
            run = self.workdir / 'run'
            if run.is_symlink():
                shutil.rmtree(run.resolve(), ignore_errors=True)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def pids(self) -> dict:
        """PID of each running daemon, by name (mon, mgr, osd, rgw)."""
        return {name: server.proc.pid
                for name, server in self._servers.items()
                if server.proc is not None}

    def leftover_pids(self) -> list:
        """PIDs of live processes whose command line names this cluster."""
        found = []
        needle = str(self.conf_path).encode()
        for entry in pathlib.Path('/proc').iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / 'cmdline').read_bytes()
            except OSError:
                continue
            if needle in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def gc(self):
        """Collect deleted RADOS objects now, whatever their age."""
        self.radosgw_admin('gc', 'process', '--include-all')

    def ceph(self, *args, timeout=60, fmt='json'):
        """Run ``ceph <args>``; the parsed JSON (or text) it prints."""
        argv = ['ceph', '--conf', self.conf_path, '--name', 'client.admin',
                '--connect-timeout', str(max(1, int(timeout)))]
        if fmt:
            argv += ['--format', fmt]
        out = self._run(argv + list(args), timeout=timeout)
        return json.loads(out) if fmt == 'json' and out.strip() else out

    def radosgw_admin(self, *args, timeout=60):
        """Run ``radosgw-admin <args>``; the parsed JSON it prints, if any."""
        out = self._run(['radosgw-admin', '--conf', self.conf_path,
                         '--name', 'client.admin'] + list(args),
                        timeout=timeout)
        try:
            return json.loads(out)
        except ValueError:
            return out

    def log_tails(self, lines=20) -> str:
        """The end of every daemon's log, for error messages."""
        parts = []
        logs = sorted((self.workdir / 'log').glob('*.log'))
        logs += sorted(self.workdir.glob('*.log'))
        for log in logs:
            with contextlib.suppress(OSError):
                tail = log.read_text(errors='replace').splitlines()[-lines:]
                parts.append('--- %s\n%s' % (log, '\n'.join(tail)))
        return '\n'.join(parts)

    # -- steps --------------------------------------------------------------

    def _mark(self, step, t0):
        self.timings[step] = round(time.monotonic() - t0, 2)

    def _prepare(self):
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        for name in ('rgw', 'mgr', 'osd', 'mon'):
            process.stop_pidfile(wd / ('%s.pid' % name))
        run = wd / 'run'
        if run.is_symlink():  # a short run dir made by an earlier start
            shutil.rmtree(run.resolve(), ignore_errors=True)
            run.unlink()
        for sub in ('mon.%s' % MON, 'mgr.%s' % MGR, 'osd.%d' % OSD,
                    RGW, 'log', 'crash', 'run'):
            shutil.rmtree(wd / sub, ignore_errors=True)
            (wd / sub).mkdir(parents=True)
        for name in ('osd.%d.block' % OSD, 'monmap', 'mon.keyring',
                     'osd-mkfs.log'):
            with contextlib.suppress(FileNotFoundError):
                (wd / name).unlink()
        # Admin sockets are UNIX sockets: their path must stay short. Under
        # a long work directory they go to a short directory in /tmp, linked
        # as <workdir>/run.
        self._run_dir = run
        # radosgw's is <run>/ceph-client.rgw.x.<pid>.<cctid>.asok.
        probe = run / ('ceph-client.%s.4194304.140000000000000.asok' % RGW)
        if len(str(probe)) > _MAX_SOCKET_PATH:
            self._run_dir = pathlib.Path(tempfile.mkdtemp(prefix='ceph-run-'))
            run.rmdir()
            run.symlink_to(self._run_dir)

        self.fsid = str(uuid.uuid4())
        self.osd_uuid = str(uuid.uuid4())
        self.mon_ports = (process.free_port(), process.free_port())
        self.env = dict(os.environ, CEPH_CONF=str(self.conf_path))
        # Nothing from the caller's environment may redirect the daemons,
        # the ceph CLI or ceph-mgr's embedded Python.
        for var in ('CEPH_ARGS', 'PYTHONPATH', 'PYTHONHOME'):
            self.env.pop(var, None)
        _write(self.conf_path, self._conf_text(), mode=0o644)

        keys = {
            'mon.': ('mon.%s' % MON, {'mon': 'allow *'}),
            'client.admin': (None, {'mon': 'allow *', 'osd': 'allow *',
                                    'mds': 'allow *', 'mgr': 'allow *'}),
            'mgr.%s' % MGR: ('mgr.%s' % MGR,
                             {'mon': 'allow profile mgr', 'osd': 'allow *',
                              'mds': 'allow *'}),
            'osd.%d' % OSD: ('osd.%d' % OSD,
                             {'mon': 'allow profile osd',
                              'mgr': 'allow profile osd', 'osd': 'allow *'}),
            'client.%s' % RGW: (RGW, {'mon': 'allow rw', 'osd': 'allow rwx',
                                      'mgr': 'allow rw'}),
        }
        mon_keyring = []
        for entity, (subdir, caps) in keys.items():
            key = make_key()
            mon_keyring.append(_keyring_text(entity, key, caps))
            if entity == 'client.admin':
                _write(self.admin_keyring, _keyring_text(entity, key, caps))
            elif entity != 'mon.':
                _write(wd / subdir / 'keyring', _keyring_text(entity, key))
        _write(wd / 'mon.keyring', ''.join(mon_keyring))

    def _conf_text(self) -> str:
        wd = self.workdir
        v2, v1 = self.mon_ports
        return '\n'.join([
            '# Made by teststack/ceph.py; one node on 127.0.0.1.',
            '[global]',
            'fsid = %s' % self.fsid,
            'mon_host = [v2:127.0.0.1:%d,v1:127.0.0.1:%d]' % (v2, v1),
            'public_addr = 127.0.0.1',
            'cluster_addr = 127.0.0.1',
            'ms_bind_ipv4 = true',
            'ms_bind_ipv6 = false',
            'auth_cluster_required = cephx',
            'auth_service_required = cephx',
            'auth_client_required = cephx',
            'auth_allow_insecure_global_id_reclaim = false',
            'keyring = %s' % self.admin_keyring,
            'run_dir = %s' % self._run_dir,
            'pid_file = $run_dir/$cluster-$name.pid',
            'crash_dir = %s/crash' % wd,
            'log_file = %s/log/$cluster-$name.log' % wd,
            'mon_cluster_log_file = %s/log/$cluster.log' % wd,
            'log_to_stderr = false',
            'err_to_stderr = true',
            'log_max_recent = 1000',
            'debug_ms = 0/0',
            'osd_pool_default_size = 1',
            'osd_pool_default_min_size = 1',
            'mon_allow_pool_size_one = true',
            'mon_warn_on_pool_no_redundancy = false',
            'osd_crush_chooseleaf_type = 0',
            'osd_pool_default_pg_num = 8',
            'osd_pool_default_pgp_num = 8',
            'osd_pool_default_pg_autoscale_mode = off',
            'mon_data_avail_warn = 5',
            'mon_allow_pool_delete = true',
            '',
            '[mon]',
            'mgr_initial_modules = iostat',
            # Commit each change to the cluster maps after 0.1 s instead of
            # 1 s: radosgw makes its pools one mon command at a time.
            'paxos_propose_interval = 0.1',
            '',
            '[mon.%s]' % MON,
            'mon_data = %s/mon.%s' % (wd, MON),
            'keyring = %s/mon.%s/keyring' % (wd, MON),
            '',
            '[mgr.%s]' % MGR,
            'mgr_data = %s/mgr.%s' % (wd, MGR),
            'keyring = %s/mgr.%s/keyring' % (wd, MGR),
            '',
            '[osd.%d]' % OSD,
            'osd_data = %s/osd.%d' % (wd, OSD),
            'keyring = %s/osd.%d/keyring' % (wd, OSD),
            'osd_objectstore = bluestore',
            'bluestore_block_path = %s/osd.%d.block' % (wd, OSD),
            'bluestore_block_create = true',
            'bluestore_block_size = %d' % self.osd_size,
            'bluestore_fsck_on_mkfs = false',
            'osd_memory_target = %d' % GiB,
            '',
            '[client.%s]' % RGW,
            'rgw_frontends = beast endpoint=127.0.0.1:%d' % self.port,
            'rgw_data = %s/%s' % (wd, RGW),
            'keyring = %s/%s/keyring' % (wd, RGW),
            'rgw_gc_obj_min_wait = 2',
            'rgw_gc_processor_period = 5',
            'rgw_gc_processor_max_time = 5',
            '',
        ])

    def _server(self, name, argv):
        server = process.Server(name, argv, self.workdir, env=self.env,
                                cwd=self.workdir)
        self._servers[name] = server
        return server.start()

    def _run(self, argv, timeout=60):
        argv = [str(a) for a in argv]
        try:
            res = subprocess.run(argv, env=self.env or None, cwd=self.workdir,
                                 stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CephError('%s timed out after %ss' % (' '.join(argv),
                                                        timeout)) from exc
        if res.returncode:
            raise CephError('%s failed (%d): %s%s' % (
                ' '.join(argv), res.returncode, res.stdout, res.stderr))
        return res.stdout

    def _start_mon(self, deadline):
        wd = self.workdir
        v2, v1 = self.mon_ports
        self._run(['monmaptool', '--create', '--clobber', '--fsid', self.fsid,
                   '--addv', MON,
                   '[v2:127.0.0.1:%d,v1:127.0.0.1:%d]' % (v2, v1),
                   '--enable-all-features', '--set-min-mon-release', 'pacific',
                   wd / 'monmap'])
        # The OSD's mkfs needs no monitor; let it run while the mon starts.
        with open(wd / 'osd-mkfs.log', 'wb') as log:
            mkfs = subprocess.Popen(
                [str(a) for a in (
                    'ceph-osd', '--conf', self.conf_path, '--id', OSD,
                    '--mkfs', '--osd-uuid', self.osd_uuid, '--no-mon-config',
                    '--monmap', wd / 'monmap')],
                env=self.env, cwd=wd, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)
        try:
            self._run(['ceph-mon', '--conf', self.conf_path, '--id', MON,
                       '--mkfs', '--monmap', wd / 'monmap',
                       '--keyring', wd / 'mon.keyring'])
            self._server('mon', ['ceph-mon', '-f', '--conf', self.conf_path,
                                 '--id', MON])
            process.wait_for_port(v2, self._left(deadline),
                                  self._servers['mon'].proc)
            # One call that needs a quorum: creates osd.0 (its key is
            # already known from mon --mkfs).
            self.ceph('osd', 'new', self.osd_uuid, str(OSD), fmt=None,
                      timeout=self._left(deadline))
        finally:
            rc = mkfs.wait(timeout=self._left(deadline))
        if rc:
            raise CephError('ceph-osd --mkfs failed (%d):\n%s' % (
                rc, (wd / 'osd-mkfs.log').read_text(errors='replace')))

    def _start_osd_mgr(self, deadline):
        self._server('osd', ['ceph-osd', '-f', '--conf', self.conf_path,
                             '--id', OSD])
        self._server('mgr', ['ceph-mgr', '-f', '--conf', self.conf_path,
                             '--id', MGR])

    def _start_rgw(self, deadline):
        self._server('rgw', ['radosgw', '-f', '--conf', self.conf_path,
                             '--name', 'client.%s' % RGW])

    def _wait_osd_up(self, deadline):
        while True:
            self._check_alive()
            stat = self.ceph('osd', 'stat', timeout=self._left(deadline))
            if stat.get('num_up_osds', 0) >= 1:
                return
            if time.monotonic() > deadline:
                raise CephError('osd.%d not up: %r\n%s' % (
                    OSD, stat, self.log_tails()))
            time.sleep(0.5)

    def _wait_http(self, deadline):
        """Until an anonymous ``GET /`` answers 200 with XML."""
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(self.endpoint + '/',
                                            timeout=5) as resp:
                    body = resp.read()
                    if resp.status == 200 and body.lstrip().startswith(b'<'):
                        return
                    last = resp.status
            except urllib.error.HTTPError as exc:
                last = exc.code
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise CephError('radosgw on %s did not answer: %r\n%s' % (
            self.endpoint, last, self.log_tails()))

    def _create_user(self):
        info = self.radosgw_admin('user', 'create', '--uid', self.uid,
                                  '--display-name', 'sizeaware tests')
        key = info['keys'][0]
        self.access_key = key['access_key']
        self.secret_key = key['secret_key']

    def _wait_health(self, deadline):
        while True:
            self._check_alive()
            status = self.ceph('status', timeout=self._left(deadline))
            health = status['health']['status']
            up = status['osdmap'].get('num_up_osds',
                                      status['osdmap'].get('osdmap', {})
                                      .get('num_up_osds', 0))
            if health in ('HEALTH_OK', 'HEALTH_WARN') and up >= 1:
                self.health = status['health']
                return
            if time.monotonic() > deadline:
                raise CephError('cluster not healthy: %s' % json.dumps(
                    status['health'], indent=1))
            time.sleep(0.5)

    def _check_alive(self):
        for name, server in self._servers.items():
            if server.proc is not None and server.proc.poll() is not None:
                raise CephError('%s exited with %s\n%s' % (
                    name, server.proc.returncode, self.log_tails()))

    @staticmethod
    def _left(deadline) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CephError('timed out')
        return left
