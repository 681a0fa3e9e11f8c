"""A private PostgreSQL cluster on 127.0.0.1, for Keystone and Glance.

::

    with Postgres() as pg:
        url = pg.create_database('keystone')
        # postgresql+psycopg2://postgres@127.0.0.1:PORT/keystone

The cluster is made with ``initdb`` in its own work directory (trust
authentication, superuser ``postgres``), and ``postgres`` runs in the
foreground as a :class:`teststack.process.Server`: TCP on 127.0.0.1 on a
free port, its unix socket in the work directory. Durability is traded for
speed (``fsync = off``): the data is thrown away after the tests.

PostgreSQL refuses to run as root. Run as root (as here and in CI), the
cluster belongs to the ``postgres`` user the Debian package creates, and
``initdb`` and ``postgres`` are started through ``setpriv`` (which execs, so
the server's PID is the one recorded and stopped). The binaries come from
``$SIZEAWARE_PG_BINDIR``, Debian's ``/usr/lib/postgresql/<newest>/bin``, or
``PATH``.

The venvs that connect (Keystone's, Glance's) need ``psycopg2-binary``.
"""

import contextlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from teststack import process

SUPERUSER = 'postgres'
# The socket path must fit in sun_path (107 bytes) with ".s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 80
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,62}$')


def _log(msg):
    print('[teststack] %s' % msg, file=sys.stderr, flush=True)


def find_bindir() -> pathlib.Path:
    """The directory holding ``initdb``, ``postgres`` and ``psql``."""
    env = os.environ.get('SIZEAWARE_PG_BINDIR')
    candidates = [pathlib.Path(env)] if env else []

    def version(path):
        try:
            return int(path.parent.name)
        except ValueError:
            return 0
    candidates += [p.parent for p in sorted(
        pathlib.Path('/usr/lib/postgresql').glob('*/bin/postgres'),
        key=lambda p: version(p.parent), reverse=True)]
    found = shutil.which('initdb')
    if found:
        candidates.append(pathlib.Path(os.path.realpath(found)).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ('initdb', 'postgres')):
            return bindir
    raise RuntimeError(
        'PostgreSQL server binaries not found (install the Debian package '
        '"postgresql", or set SIZEAWARE_PG_BINDIR)')


def _run_as_prefix(user):
    """argv prefix that runs a command as ``user`` (empty when we are not
    root). ``setpriv`` execs the command: its PID stays the server's."""
    if os.geteuid() != 0:
        return []
    pw = pwd.getpwnam(user)
    if shutil.which('setpriv'):
        return ['setpriv', '--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid,
                '--init-groups', '--reset-env', '--']
    return ['runuser', '-u', user, '--']


def _service_user():
    """The unprivileged user the cluster belongs to when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ('postgres', 'sizeaware-pg'):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(['useradd', '--system', '--no-create-home',
                    '--shell', '/usr/sbin/nologin', 'sizeaware-pg'],
                   check=True, capture_output=True)
    return 'sizeaware-pg'


def _reachable_by(user, path):
    """Whether ``user`` may traverse every directory up to ``path``."""
    if user is None:
        return True
    proc = subprocess.run(_run_as_prefix(user) + ['test', '-x', str(path)],
                          capture_output=True)
    return proc.returncode == 0


class Postgres(process.Service):
    """One private PostgreSQL cluster.

    :param workdir: default a fresh directory under ``state_dir()/run``,
        removed by :meth:`stop` unless ``keep_workdir`` (or env
        ``SIZEAWARE_KEEP_WORKDIR=1``); the cluster in it is made anew on
        every :meth:`start`.
    :param port: default a free port.
    :param settings: extra ``postgresql.conf`` settings.
    """

    def __init__(self, workdir=None, port=None, settings=None,
                 keep_workdir=None):
        self._init_workdir('postgres-', workdir, keep_workdir)
        self.port = port
        self.settings = dict(settings or {})
        self.bindir = None
        self.user = None
        self._tmp_socket_dir = None
        self._set_workdir(self.workdir)

    def _set_workdir(self, workdir):
        self.workdir = workdir
        self.datadir = self.workdir / 'data'
        self.socket_dir = self.workdir / 'run'
        self.server = process.Server('postgres', [], self.workdir)
        self.log_path = self.server.log_path

    # -- lifecycle -----------------------------------------------------

    def start(self, timeout=60) -> 'Postgres':
        if self.running:
            return self
        started = time.monotonic()
        self.bindir = find_bindir()
        self.user = _service_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.user and self._own_workdir:
            self.workdir.chmod(0o755)   # mkdtemp makes it 0700
        # A server left behind by a crashed run still holds the data dir.
        self._stop_pid(process.stop_pidfile)
        if not _reachable_by(self.user, self.workdir):
            # e.g. a checkout under a 0700 home: fall back to /tmp.
            fallback = pathlib.Path(tempfile.mkdtemp(prefix='sizeaware-pg-'))
            fallback.chmod(0o755)
            _log('user %s cannot reach %s; the cluster goes to %s'
                 % (self.user, self.workdir, fallback))
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = True
            self._set_workdir(fallback)
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR:
            self.socket_dir = pathlib.Path(tempfile.mkdtemp(prefix='pg-'))
            self._tmp_socket_dir = self.socket_dir
        shutil.rmtree(self.datadir, ignore_errors=True)
        for path in (self.datadir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            if self.user:
                shutil.chown(path, self.user, self.user)
        self.datadir.chmod(0o700)
        self._initdb()
        if self.port is None:
            self.port = process.free_port()
        self.server.argv = _run_as_prefix(self.user) + [
            self.bindir / 'postgres', '-D', self.datadir,
            '-h', '127.0.0.1', '-p', str(self.port),
            '-k', self.socket_dir]
        self.server.env = dict(os.environ, LC_ALL='C')
        self.server.start()
        try:
            self._wait_ready(timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError('PostgreSQL did not start: %s\n--- %s ---\n%s'
                               % (exc, self.log_path,
                                  self.server.log_tail(40))) from None
        _log('PostgreSQL up on 127.0.0.1:%d in %.1f s (%s)'
             % (self.port, time.monotonic() - started, self.workdir))
        return self

    def stop(self, timeout=20):
        """Fast shutdown (SIGINT: open sessions are cut, not waited for),
        then the process group is stopped by PID."""
        proc = self.server.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        self.server.stop()
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
        self._remove_workdir()

    def _stop_pid(self, fallback):
        pid_path = self.server.pid_path
        with contextlib.suppress(FileNotFoundError, ValueError,
                                 ProcessLookupError, PermissionError):
            os.kill(int(pid_path.read_text().strip()), signal.SIGINT)
            time.sleep(1)
        fallback(pid_path)

    # -- databases -----------------------------------------------------

    def url(self, name, driver='postgresql+psycopg2') -> str:
        """SQLAlchemy URL of database ``name``."""
        return '%s://%s@127.0.0.1:%d/%s' % (driver, SUPERUSER, self.port,
                                            name)

    def psql(self, sql, database='postgres') -> str:
        """Run SQL through ``psql`` (TCP, trust auth); returns its output."""
        proc = subprocess.run(
            [str(self.bindir / 'psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1',
             '-h', '127.0.0.1', '-p', str(self.port), '-U', SUPERUSER,
             '-d', database, '-At', '-c', sql],
            capture_output=True, text=True, env=dict(os.environ, LC_ALL='C'),
            timeout=60)
        if proc.returncode:
            raise RuntimeError('psql %r failed: %s' % (sql, proc.stderr))
        return proc.stdout

    def create_database(self, name, drop=True) -> str:
        """Create database ``name`` (dropped first if it exists and
        ``drop``); returns its SQLAlchemy URL."""
        if not _NAME_RE.match(name):
            raise ValueError('bad database name %r' % name)
        if drop:
            self.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        self.psql('CREATE DATABASE "%s" ENCODING \'UTF8\' TEMPLATE template0'
                  % name)
        return self.url(name)

    # -- internals -----------------------------------------------------

    def _initdb(self):
        log_path = self.workdir / 'initdb.log'
        argv = _run_as_prefix(self.user) + [
            str(self.bindir / 'initdb'), '-D', str(self.datadir),
            '-U', SUPERUSER, '-A', 'trust', '-E', 'UTF8', '--locale=C',
            '--no-sync']
        with open(log_path, 'wb') as log:
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd='/',
                                  env=dict(os.environ, LC_ALL='C'),
                                  timeout=120)
        if proc.returncode:
            raise RuntimeError('initdb failed (exit %d):\n%s' % (
                proc.returncode, log_path.read_text(errors='replace')))
        settings = {
            'listen_addresses': "'127.0.0.1'",
            'max_connections': 300,
            'shared_buffers': "'64MB'",
            'fsync': 'off',
            'synchronous_commit': 'off',
            'full_page_writes': 'off',
            'log_destination': "'stderr'",
            'logging_collector': 'off',
            'log_min_messages': 'warning',
        }
        settings.update(self.settings)
        with open(self.datadir / 'postgresql.conf', 'a') as conf:
            conf.write('\n# sizeaware test stack\n')
            for key, value in settings.items():
                conf.write('%s = %s\n' % (key, value))

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        isready = self.bindir / 'pg_isready'
        last = ''
        while time.monotonic() < deadline:
            if self.server.proc.poll() is not None:
                raise RuntimeError('postgres exited with %s'
                                   % self.server.proc.returncode)
            if isready.is_file():
                proc = subprocess.run(
                    [str(isready), '-q', '-h', '127.0.0.1', '-p',
                     str(self.port), '-U', SUPERUSER, '-d', 'postgres'],
                    capture_output=True, text=True)
                if proc.returncode == 0:
                    return
                last = 'pg_isready exit %d' % proc.returncode
            else:
                with contextlib.suppress(RuntimeError):
                    process.wait_for_port(self.port, timeout=1,
                                          proc=self.server.proc)
                    return
            time.sleep(0.1)
        raise RuntimeError('not ready after %ss (%s)' % (timeout, last))


if __name__ == '__main__':  # pragma: no cover - manual use
    with Postgres() as pg:
        print(pg.create_database('smoke'))
        print(pg.psql('SELECT version()'))
