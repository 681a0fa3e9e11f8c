"""Start a server in the background, wait until it answers, stop it by PID.

Each server runs in its own session (process group), logs to one file and
records its PID in a pid file beside the log, so a server left behind by a
crashed run can still be found and stopped.
"""

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, proc=None) -> None:
    """Block until 127.0.0.1:port accepts connections.

    :raises RuntimeError: when ``proc`` exits first or time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError('process exited with %s before listening on '
                               '%d' % (proc.returncode, port))
        with contextlib.closing(socket.socket()) as sock:
            sock.settimeout(1)
            if sock.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError('nothing listens on 127.0.0.1:%d after %ss'
                       % (port, timeout))


def wait_for_http(url: str, timeout: float = 60.0, proc=None,
                  ok=(200, 300, 401)) -> None:
    """Block until ``url`` answers with a status in ``ok``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError('process exited with %s before %s answered'
                               % (proc.returncode, url))
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        if last in ok:
            return
        time.sleep(0.2)
    raise RuntimeError('%s did not answer in %ss (last: %r)'
                       % (url, timeout, last))


class Server:
    """One background server process.

    :param name: used for the log and pid file names.
    :param argv: the command line.
    :param workdir: directory for ``<name>.log`` and ``<name>.pid``.
    :param env: extra environment variables.
    """

    def __init__(self, name, argv, workdir, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.workdir = pathlib.Path(workdir)
        self.env = dict(os.environ, **(env or {}))
        self.cwd = cwd
        self.log_path = self.workdir / ('%s.log' % name)
        self.pid_path = self.workdir / ('%s.pid' % name)
        self.proc = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        stop_pidfile(self.pid_path)
        log = open(self.log_path, 'ab')
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                start_new_session=True)
        finally:
            log.close()
        self.pid_path.write_text('%d\n' % self.proc.pid)
        return self

    def stop(self, timeout: float = 20.0):
        if self.proc is None:
            return
        _stop_group(self.proc.pid, timeout, self.proc)
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(FileNotFoundError):
            return '\n'.join(
                self.log_path.read_text(errors='replace').splitlines()[-lines:])
        return ''


def stop_pidfile(pid_path, timeout: float = 20.0) -> None:
    """Stop the process group whose leader's PID is in ``pid_path``."""
    pid_path = pathlib.Path(pid_path)
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    _stop_group(pid, timeout)
    with contextlib.suppress(FileNotFoundError):
        pid_path.unlink()


def _stop_group(pid, timeout, proc=None):
    """TERM the process group led by ``pid``, KILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    break
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.1)
        else:
            continue
        # The leader is gone; make sure no child of the group lingers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        return


class Service:
    """A server of the stack: one main process and a work directory.

    Subclasses call :meth:`_init_workdir` from ``__init__``, set
    ``self.server`` (a :class:`Server`) and implement ``start``. A work
    directory made here (under ``state_dir()/run``) is removed by
    :meth:`stop` unless it is to be kept (``keep_workdir``, or env
    ``SIZEAWARE_KEEP_WORKDIR=1``); one given by the caller never is.
    """

    server = None

    def _init_workdir(self, prefix, workdir=None, keep_workdir=None):
        from teststack import paths
        if workdir is None:
            run = paths.state_dir() / 'run'
            run.mkdir(parents=True, exist_ok=True)
            self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=prefix,
                                                         dir=run))
            self._own_workdir = True
        else:
            self.workdir = pathlib.Path(workdir).resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._own_workdir = False
        if keep_workdir is None:
            keep_workdir = os.environ.get('SIZEAWARE_KEEP_WORKDIR') == '1'
        self.keep_workdir = keep_workdir

    @property
    def running(self) -> bool:
        proc = self.server.proc if self.server is not None else None
        return proc is not None and proc.poll() is None

    def stop(self):
        if self.server is not None:
            self.server.stop()
        self._remove_workdir()

    def _remove_workdir(self):
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        return self.server.log_tail(lines)
