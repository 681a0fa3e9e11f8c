"""A private PostgreSQL cluster on 127.0.0.1, for Keystone and Glance.

::

    with Postgres() as pg:
        url = pg.create_database('keystone')
        # postgresql+psycopg2://postgres@127.0.0.1:PORT/keystone

The cluster is made with ``initdb`` in its own work directory (trust
authentication, superuser ``postgres``, TCP only), and ``postgres`` runs in
the foreground as the service's process. Durability is traded for speed
(``fsync = off``): the data is thrown away after the tests.

PostgreSQL refuses to run as root. Run as root (as here and in CI),
``initdb`` and ``postgres`` run as the ``postgres`` user the Debian package
creates, through ``setpriv`` (which execs, so the server's PID is the one
recorded and stopped), and the work directory is made in the system's
temporary directory, which that user can reach. pifpaf (3.4) cannot stand
in for this module here: it runs ``pg_ctl`` as the calling user with no way
to change it, and ``pg_ctl`` refuses to run as root. The binaries come from
``$SIZEAWARE_PG_BINDIR``, Debian's ``/usr/lib/postgresql/<newest>/bin``, or
``PATH``.

The venvs that connect (Keystone's, Glance's) need ``psycopg2-binary``.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile

from teststack import process

SUPERUSER = 'postgres'
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,62}$')
SETTINGS = {
    'listen_addresses': "'127.0.0.1'",
    'unix_socket_directories': "''",
    'max_connections': 300,
    'shared_buffers': "'64MB'",
    'fsync': 'off',
    'synchronous_commit': 'off',
    'full_page_writes': 'off',
    'log_min_messages': 'warning',
}


def bindir() -> pathlib.Path:
    """The directory holding ``initdb``, ``postgres``, ``psql``."""
    if os.environ.get('SIZEAWARE_PG_BINDIR'):
        return pathlib.Path(os.environ['SIZEAWARE_PG_BINDIR'])
    found = sorted(pathlib.Path('/usr/lib/postgresql').glob('*/bin/initdb'),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit()
                   else 0)
    if found:
        return found[-1].parent
    if shutil.which('initdb'):
        return pathlib.Path(os.path.realpath(shutil.which('initdb'))).parent
    raise RuntimeError('PostgreSQL server binaries not found (install the '
                       'Debian package "postgresql", or set '
                       'SIZEAWARE_PG_BINDIR)')


class Postgres(process.Service):
    """One private PostgreSQL cluster, made anew by every :meth:`start`.

    :param workdir: default a fresh directory in the system's temporary
        directory, removed by :meth:`stop` unless ``keep_workdir`` (or env
        ``SIZEAWARE_KEEP_WORKDIR=1``).
    :param port: default a free port.
    """

    # Fast shutdown: open sessions are cut, not waited for.
    STOP_SIGNAL = signal.SIGINT
    SHARED = ('port',)

    def __init__(self, workdir=None, port=None, keep_workdir=None):
        super().__init__('postgres',
                         workdir or tempfile.mkdtemp(prefix='sizeaware-pg-'),
                         keep_workdir)
        self.own_workdir = workdir is None
        self.port = port

    def _start(self, timeout):
        as_user = []
        datadir = self.workdir / 'data'
        shutil.rmtree(datadir, ignore_errors=True)
        datadir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            as_user = ['setpriv', '--reuid', SUPERUSER, '--regid', SUPERUSER,
                       '--init-groups', '--reset-env', '--']
            self.workdir.chmod(0o755)  # mkdtemp makes it 0700
            shutil.chown(datadir, SUPERUSER, SUPERUSER)
        env = dict(os.environ, LC_ALL='C')
        self.run({'initdb': as_user + [
            bindir() / 'initdb', '-D', datadir, '-U', SUPERUSER, '-A',
            'trust', '-E', 'UTF8', '--locale=C', '--no-sync']}, env=env)
        with open(datadir / 'postgresql.conf', 'a') as conf:
            conf.writelines('%s = %s\n' % item for item in SETTINGS.items())
        if self.port is None:
            self.port = process.free_port()
        self.spawn(as_user + [bindir() / 'postgres', '-D', datadir,
                              '-p', self.port], env=env)
        self.wait_until(lambda: subprocess.run(
            [bindir() / 'pg_isready', '-q', '-h', '127.0.0.1', '-p',
             str(self.port)]).returncode == 0, timeout, 'PostgreSQL')

    def url(self, name, driver='postgresql+psycopg2') -> str:
        """SQLAlchemy URL of database ``name``."""
        return '%s://%s@127.0.0.1:%d/%s' % (driver, SUPERUSER, self.port,
                                            name)

    def psql(self, sql, database='postgres') -> str:
        """Run SQL through ``psql`` (TCP, trust auth); returns its output."""
        proc = subprocess.run(
            [bindir() / 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
             '-h', '127.0.0.1', '-p', str(self.port), '-U', SUPERUSER,
             '-d', database, '-At', '-c', sql],
            capture_output=True, text=True, env=dict(os.environ, LC_ALL='C'),
            timeout=60)
        if proc.returncode:
            raise RuntimeError('psql %r failed: %s' % (sql, proc.stderr))
        return proc.stdout

    def create_database(self, name) -> str:
        """Create database ``name`` anew (dropped first if it exists);
        returns its SQLAlchemy URL."""
        if not _NAME_RE.match(name):
            raise ValueError('bad database name %r' % name)
        self.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        self.psql('CREATE DATABASE "%s" ENCODING \'UTF8\' TEMPLATE template0'
                  % name)
        return self.url(name)
