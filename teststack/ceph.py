"""A throwaway one-node Ceph cluster with radosgw (S3) on 127.0.0.1, and
RBD pools and a CephFS on the same cluster.

Used by the functional tests and the benchmarks of Glance's S3 and RBD
stores::

    with RadosGW() as rgw:
        s3 = boto3.client('s3', endpoint_url=rgw.endpoint,
                          aws_access_key_id=rgw.access_key,
                          aws_secret_access_key=rgw.secret_key,
                          region_name='us-east-1')
        pool = rgw.add_rbd_pool('images', user='glance')
        # Glance: rbd_store_pool = pool.name, rbd_store_user = pool.user,
        # rbd_store_ceph_conf = pool.conf_path

Four daemons, each in the foreground as a process of the service:
``ceph-mon`` (``mon.a``), ``ceph-osd`` (``osd.0``, BlueStore on a sparse
file), ``ceph-mgr`` (``mgr.x``) and ``radosgw`` (``client.rgw.x``, beast on
``127.0.0.1:<port>``). Authentication is cephx; every key is made here and
handed to ``ceph-mon --mkfs``, so no ``ceph auth`` round trip is needed.
Every path a daemon or a client writes (data, keyrings, logs, admin
sockets, pid files, crash dumps) is under the work directory and every
command gets ``--conf`` explicitly, so clusters never collide with one
another or with a system-wide ``/etc/ceph``.

An RBD pool (:meth:`RadosGW.add_rbd_pool`) comes with a cephx client that
may use only that pool, and a ``[client.<user>]`` section in the cluster's
``ceph.conf`` with its keyring, ``debug_rbd = 5`` and a log file of its
own: librbd then logs every operation the client makes, each resize
included.

A CephFS (:meth:`RadosGW.add_cephfs`) is made only when asked, so the
cluster starts as fast without it: its two pools, ``ceph fs new``, and a
fifth daemon, ``ceph-mds`` (``mds.a``, whose key is made with the others).
Each :meth:`CephFS.mount` is a ``ceph-fuse`` process of its own with a
cephx client of its own, so two mounts of one file system are two CephFS
clients, as two hosts mounting it would be::

    fs = rgw.add_cephfs()
    with fs.mount(tmp / 'a', 'node1') as a, fs.mount(tmp / 'b', 'node2') as b:
        (a.path / 'x').write_text('seen by both')
        assert (b.path / 'x').read_text() == 'seen by both'

Needs the Debian packages ``ceph-mon ceph-osd ceph-mgr radosgw ceph-common``
(see ``bindep.txt``), and ``ceph-mds ceph-fuse fuse3`` for CephFS; a Python
using RBD pools also needs ``python3-rados`` and ``python3-rbd`` (see
:func:`teststack.venvs.link_system_modules`).
"""

import base64
import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.request
import uuid

from teststack import process

GiB = 1024 ** 3

MON = 'a'
MGR = 'x'
OSD = 0
RGW = 'rgw.x'
MDS = 'a'

# Longest admin socket path we let a daemon create (sun_path is 108 bytes).
_MAX_SOCKET_PATH = 100


def make_key() -> str:
    """A new cephx secret, as ``ceph-authtool --gen-key`` prints it.

    The encoding of a ``CryptoKey``: type (1 = AES), creation time (seconds,
    nanoseconds), length, then 16 random bytes.
    """
    secret = os.urandom(16)
    header = struct.pack('<hiih', 1, int(time.time()), 0, len(secret))
    return base64.b64encode(header + secret).decode('ascii')


def _keyring(path, name, key, caps=None):
    lines = ['[%s]' % name, '\tkey = %s' % key]
    for service, cap in (caps or {}).items():
        lines.append('\tcaps %s = "%s"' % (service, cap))
    text = '\n'.join(lines) + '\n'
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
    return text


class RBDPool:
    """An RBD pool and the cephx client allowed to use it; made by
    :meth:`RadosGW.add_rbd_pool`.

    :ivar name: the pool.
    :ivar user: the client's id (``client.<user>``).
    :ivar conf_path: the cluster's ``ceph.conf``, which has the client's
        section.
    :ivar log_path: where librbd logs what the client does, at level 5.
    """

    def __init__(self, cluster, name, user, log_path):
        self.cluster = cluster
        self.name = name
        self.user = user
        self.conf_path = cluster.conf_path
        self.log_path = log_path

    def images(self) -> list:
        """The names of the images in the pool (``rbd ls``, as admin)."""
        return json.loads(self.cluster.rbd('ls', '--pool', self.name,
                                           '--format', 'json'))


class CephFS:
    """A CephFS file system of the cluster; made by
    :meth:`RadosGW.add_cephfs`.

    :ivar name: the file system.
    :ivar metadata_pool, data_pool: its two RADOS pools.
    """

    def __init__(self, cluster, name, metadata_pool, data_pool):
        self.cluster = cluster
        self.name = name
        self.metadata_pool = metadata_pool
        self.data_pool = data_pool

    def authorize(self, client) -> pathlib.Path:
        """The keyring of cephx client ``client.<client>``, made (once) with
        read-write access to the whole file system and nothing else
        (``ceph fs authorize``)."""
        entity = 'client.%s' % client
        keyring = self.cluster.workdir / entity / 'keyring'
        if not keyring.exists():
            (found,) = self.cluster.ceph('fs', 'authorize', self.name,
                                         entity, '/', 'rw')
            _keyring(keyring, entity, found['key'])
        return keyring

    def mount(self, path, client, timeout=60) -> 'CephFSMount':
        """Mount the file system's root on directory ``path`` (made if
        missing) with ``ceph-fuse`` as cephx client ``client.<client>``;
        returns once the mount is there. Each client name may be mounted
        once at a time."""
        return CephFSMount(self, path, client).mount(timeout)

    def active(self) -> bool:
        """Whether an MDS is active for the file system (clients can mount
        it)."""
        info = self.cluster.ceph('fs', 'get', self.name)['mdsmap']['info']
        return any(mds['state'] == 'up:active' for mds in info.values())


class CephFSMount:
    """One ``ceph-fuse`` mount of a :class:`CephFS`: one CephFS client, as
    a host would mount it. A context manager that unmounts on exit.

    The ``ceph-fuse`` process runs in the foreground as a process of the
    cluster's service (``fuse.<client>``, stopped by PID); it logs to the
    cluster's ``log/ceph-client.<client>.log``.

    :ivar path: the mount point.
    :ivar client: the cephx client's id (``client.<client>``).
    """

    def __init__(self, fs, path, client):
        self.fs = fs
        self.path = pathlib.Path(path).resolve()
        self.client = client
        self.process_name = 'fuse.%s' % client

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.unmount()

    @property
    def mounted(self) -> bool:
        return _mounted(self.path)

    def mount(self, timeout=60):
        cluster = self.fs.cluster
        if self.process_name in cluster.pids:
            raise RuntimeError('client.%s is mounted already' % self.client)
        if self.mounted:
            raise RuntimeError('%s is a mount point already' % self.path)
        keyring = self.fs.authorize(self.client)
        self.path.mkdir(parents=True, exist_ok=True)
        cluster.spawn([
            'ceph-fuse', '-f', '--conf', cluster.conf_path,
            '--name', 'client.%s' % self.client, '--keyring', keyring,
            '--client_fs', self.fs.name, self.path,
        ], name=self.process_name, env=cluster.env)
        cluster.mounts.append(self)
        try:
            cluster.wait_until(lambda: self.mounted, timeout,
                               'ceph-fuse on %s' % self.path)
        except BaseException:
            self.unmount()
            raise
        return self

    def unmount(self, timeout=30):
        """Unmount (``fusermount -u``, else ``umount``, lazily as the last
        resort: a file still open there keeps the mount busy) and wait for
        ``ceph-fuse`` to exit, which it does once unmounted; stop it by PID
        if it does not. Unmounting twice is harmless."""
        cluster = self.fs.cluster
        if self.mounted:
            fusermount = shutil.which('fusermount3') or shutil.which(
                'fusermount')
            attempts = ([[fusermount, '-u', self.path]] if fusermount
                        else []) + [['umount', self.path],
                                    ['umount', '-l', self.path]]
            for argv in attempts:
                subprocess.run([str(a) for a in argv], capture_output=True,
                               stdin=subprocess.DEVNULL, timeout=timeout)
                if not self.mounted:
                    break
        proc = cluster._procs.get(self.process_name)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        cluster._stop_process(self.process_name, signal.SIGTERM, timeout)
        with contextlib.suppress(ValueError):
            cluster.mounts.remove(self)
        if self.mounted:
            raise RuntimeError('%s is still mounted' % self.path)


def _mounted(path) -> bool:
    """Whether ``path`` is a mount point, read from the mount table
    rather than by a ``stat`` that a dead FUSE mount would answer with
    ENOTCONN (or hang)."""
    with open('/proc/self/mountinfo') as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            # The table escapes blanks and backslashes as octal.
            point = re.sub(r'\\([0-7]{3})',
                           lambda m: chr(int(m.group(1), 8)), point)
            if point == str(path):
                return True
    return False


class RadosGW(process.Service):
    """A one-node Ceph cluster serving S3 on ``127.0.0.1:<port>``.

    :param workdir: where everything goes; default a fresh directory under
        ``state_dir()/run``, removed by :meth:`stop` unless ``keep_workdir``
        (or env ``SIZEAWARE_KEEP_WORKDIR=1``).
    :param port: the radosgw port; a free one by default.
    :param osd_size: the size of the OSD's sparse block file.
    :param uid: the S3 user created by :meth:`start`.
    """

    def __init__(self, workdir=None, port=None, osd_size=20 * GiB,
                 uid='sizeaware', keep_workdir=None):
        super().__init__('ceph', workdir, keep_workdir)
        self.port = port or process.free_port()
        self.osd_size = int(osd_size)
        self.uid = uid
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        self.access_key = self.secret_key = None
        self.fsid = str(uuid.uuid4())
        self.osd_uuid = str(uuid.uuid4())
        self.mon_ports = (process.free_port(), process.free_port())
        self.conf_path = self.workdir / 'ceph.conf'
        self.admin_keyring = self.workdir / 'ceph.client.admin.keyring'
        # Admin sockets are UNIX sockets: their path must stay short.
        # radosgw's is <run>/ceph-client.rgw.x.<pid>.<cctid>.asok.
        self.run_dir = self.workdir / 'run'
        if len(str(self.run_dir / ('ceph-client.%s.4194304.140000000000000'
                                   '.asok' % RGW))) > _MAX_SOCKET_PATH:
            self.run_dir = pathlib.Path(tempfile.mkdtemp(prefix='ceph-run-'))
        # Nothing from the caller's environment may redirect the daemons,
        # the ceph CLI or ceph-mgr's embedded Python.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ('CEPH_ARGS', 'PYTHONPATH', 'PYTHONHOME')}
        self.env['CEPH_CONF'] = str(self.conf_path)
        #: The :class:`CephFSMount` mounted now; :meth:`stop` unmounts
        #: them first.
        self.mounts = []
        self.cephfs = None

    def stop(self, timeout=30.0):
        if not self.attached:
            for mount in list(self.mounts):
                with contextlib.suppress(Exception):
                    mount.unmount()
            # SIGTERM makes ceph-mds hand its rank back to the monitors
            # first, which took from 4 to over 30 s here: nothing worth
            # waiting for in a cluster about to be thrown away.
            self._stop_process('mds', signal.SIGKILL, timeout)
        super().stop(timeout)
        if not self.attached and self.run_dir.parent != self.workdir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _stop_process(self, name, sig, timeout):
        """Stop process ``name`` of the service alone, by its PID."""
        pid = self.pids.pop(name, None)
        if pid is None:
            return
        process.stop_group(pid, timeout, sig)
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / ('%s.pid' % name)).unlink()

    def logs(self) -> list:
        return super().logs() + sorted((self.workdir / 'log').glob('*.log'))

    def gc(self):
        """Collect deleted RADOS objects now, whatever their age."""
        self.radosgw_admin('gc', 'process', '--include-all')

    def ceph(self, *args, timeout=60):
        """Run ``ceph <args>``; the JSON it prints, parsed."""
        out = self._cli(['ceph', '--conf', self.conf_path, '--name',
                         'client.admin', '--connect-timeout', str(timeout),
                         '--format', 'json', *args], timeout)
        return json.loads(out) if out.strip() else None

    def rbd(self, *args, timeout=60) -> str:
        """Run ``rbd <args>`` as admin; what it prints."""
        return self._cli(['rbd', '--conf', self.conf_path, '--name',
                          'client.admin', *args], timeout)

    def add_rbd_pool(self, name='images', user='glance') -> RBDPool:
        """Create the RBD pool ``name`` and the cephx client ``user`` that
        may use it and nothing else (the caps the Ceph documentation gives
        Glance); add the client's section to ``ceph.conf``, with librbd
        logging at level 5 to a file of its own. Calling it again for the
        same pool and user changes nothing."""
        entity = 'client.%s' % user
        self.ceph('osd', 'pool', 'create', name)
        self.rbd('pool', 'init', name)
        keyring = self.workdir / entity / 'keyring'
        key = self.ceph('auth', 'get-or-create-key', entity,
                        'mon', 'profile rbd',
                        'osd', 'profile rbd pool=%s' % name)['key']
        _keyring(keyring, entity, key)
        log_path = self.workdir / 'log' / ('rbd-%s.log' % user)
        section = '[%s]' % entity
        conf = self.conf_path.read_text()
        if section not in conf.splitlines():
            self.conf_path.write_text(conf + '\n'.join([
                section,
                'keyring = %s' % keyring,
                'log_file = %s' % log_path,
                'debug_rbd = 5',
                '',
            ]))
        return RBDPool(self, name, user, log_path)

    def add_cephfs(self, name='cephfs', timeout=60) -> CephFS:
        """The cluster's CephFS ``name``: its metadata and data pools,
        ``ceph fs new``, and ``ceph-mds`` (started now, not with the
        cluster); returns once an MDS is active for it. One MDS serves one
        file system: calling it again returns the same one, and asking for
        another name is an error."""
        if self.cephfs is not None:
            if self.cephfs.name != name:
                raise ValueError('the cluster has CephFS %r already'
                                 % self.cephfs.name)
            return self.cephfs
        deadline = time.monotonic() + timeout
        # Started first: it registers as a standby while the pools are
        # made, and the monitors give it the new file system's rank 0.
        if 'mds' not in self.pids:
            self._daemon('mds', 'ceph-mds', '--id', MDS)
        fs = CephFS(self, name, '%s_metadata' % name, '%s_data' % name)
        for pool in (fs.metadata_pool, fs.data_pool):
            self.ceph('osd', 'pool', 'create', pool)
        self.ceph('fs', 'new', name, fs.metadata_pool, fs.data_pool)
        self.wait_until(fs.active, self._left(deadline),
                        'an active MDS for CephFS %s' % name)
        self.cephfs = fs
        return fs

    def radosgw_admin(self, *args, timeout=60):
        """Run ``radosgw-admin <args>``; the parsed JSON it prints, if any."""
        out = self._cli(['radosgw-admin', '--conf', self.conf_path,
                         '--name', 'client.admin', *args], timeout)
        try:
            return json.loads(out)
        except ValueError:
            return out

    # -- steps --------------------------------------------------------------

    def _start(self, timeout):
        deadline = time.monotonic() + timeout
        wd = self.workdir
        self._prepare()
        v2, v1 = self.mon_ports
        self._cli(['monmaptool', '--create', '--clobber', '--fsid', self.fsid,
                   '--addv', MON,
                   '[v2:127.0.0.1:%d,v1:127.0.0.1:%d]' % (v2, v1),
                   '--enable-all-features', '--set-min-mon-release', 'pacific',
                   wd / 'monmap'])
        self.run({
            'mon-mkfs': ['ceph-mon', '--conf', self.conf_path, '--id', MON,
                         '--mkfs', '--monmap', wd / 'monmap',
                         '--keyring', wd / 'mon.keyring'],
            'osd-mkfs': ['ceph-osd', '--conf', self.conf_path, '--id', OSD,
                         '--mkfs', '--osd-uuid', self.osd_uuid,
                         '--no-mon-config', '--monmap', wd / 'monmap'],
        }, env=self.env)
        self._daemon('mon', 'ceph-mon', '--id', MON)
        self.wait_for_port(v2, self._left(deadline))
        # Needs a quorum: creates osd.0 (its key is known from mon --mkfs).
        self._cli(['ceph', '--conf', self.conf_path, 'osd', 'new',
                   self.osd_uuid, str(OSD)], self._left(deadline))
        self._daemon('osd', 'ceph-osd', '--id', OSD)
        self._daemon('mgr', 'ceph-mgr', '--id', MGR)
        self._daemon('rgw', 'radosgw', '--name', 'client.%s' % RGW)
        self.wait_until(lambda: self.ceph('osd', 'stat').get(
            'num_up_osds', 0) >= 1, self._left(deadline), 'osd.%d up' % OSD)

        def rgw_ready():   # an anonymous GET / answers 200 with XML
            with urllib.request.urlopen(self.endpoint + '/',
                                        timeout=5) as resp:
                return resp.read().lstrip().startswith(b'<')
        self.wait_until(rgw_ready, self._left(deadline), self.endpoint)
        key = self.radosgw_admin('user', 'create', '--uid', self.uid,
                                 '--display-name', 'sizeaware tests')
        self.access_key = key['keys'][0]['access_key']
        self.secret_key = key['keys'][0]['secret_key']

    def _prepare(self):
        wd = self.workdir
        for sub in ('mon.%s' % MON, 'mgr.%s' % MGR, 'osd.%d' % OSD,
                    'mds.%s' % MDS, RGW, 'log', 'crash'):
            shutil.rmtree(wd / sub, ignore_errors=True)
            (wd / sub).mkdir(parents=True)
        (wd / ('osd.%d.block' % OSD)).unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self._conf_text())
        caps = {
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
            # Its key costs nothing here; the daemon runs only once a
            # CephFS is asked for (add_cephfs).
            'mds.%s' % MDS: ('mds.%s' % MDS,
                             {'mon': 'allow profile mds', 'osd': 'allow rwx',
                              'mds': 'allow *',
                              'mgr': 'allow profile mds'}),
        }
        mon_keyring = []
        for entity, (subdir, entity_caps) in caps.items():
            key = make_key()
            mon_keyring.append(_keyring(None, entity, key, entity_caps))
            if entity == 'client.admin':
                _keyring(self.admin_keyring, entity, key, entity_caps)
            elif entity != 'mon.':
                _keyring(wd / subdir / 'keyring', entity, key)
        (wd / 'mon.keyring').write_text(''.join(mon_keyring))

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
            'run_dir = %s' % self.run_dir,
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
            '[mds.%s]' % MDS,
            'mds_data = %s/mds.%s' % (wd, MDS),
            'keyring = %s/mds.%s/keyring' % (wd, MDS),
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

    def _daemon(self, name, *argv):
        self.spawn([*argv, '-f', '--conf', self.conf_path], name=name,
                   env=self.env)

    def _cli(self, argv, timeout=60) -> str:
        argv = [str(a) for a in argv]
        try:
            res = subprocess.run(argv, env=self.env, cwd=self.workdir,
                                 stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError('%s timed out after %ss'
                               % (' '.join(argv), timeout)) from None
        if res.returncode:
            raise RuntimeError('%s failed (%d): %s%s' % (
                ' '.join(argv), res.returncode, res.stdout, res.stderr))
        return res.stdout

    @staticmethod
    def _left(deadline) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError('timed out')
        return left
