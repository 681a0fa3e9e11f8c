"""The one base of every server of the stack: :class:`Service`.

A service owns a work directory and the processes it starts in it, each in
its own session (process group), logging to ``<name>.log`` and with its PID
in ``<name>.pid`` beside the log, so a server left behind by a crashed run
can still be found and stopped. A failed start stops what it started and
raises with the tails of the service's logs.

One run shares servers between processes: ``tools/run-tests`` starts
PostgreSQL and Keystone once (``python -m teststack services start FILE``),
exports ``SIZEAWARE_SERVICES=FILE``, and :func:`shared` attaches to them
instead of starting new ones.
"""

import contextlib
import importlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from teststack import paths

SERVICES_ENV = 'SIZEAWARE_SERVICES'


def log(msg):
    print('[teststack] %s' % msg, file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def alive(pid) -> bool:
    """Whether ``pid`` runs; a zombie does not (PID 1 here does not always
    reap orphans)."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def stop_group(pid, timeout=20.0, sig=signal.SIGTERM) -> None:
    """Send ``sig`` to ``pid``, wait up to ``timeout`` for it to end, then
    SIGKILL what is left of the process group it leads."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_pidfile(pid_path, timeout=20.0, sig=signal.SIGTERM) -> None:
    """Stop the process group whose leader's PID is in ``pid_path``."""
    pid_path = pathlib.Path(pid_path)
    with contextlib.suppress(FileNotFoundError, ValueError):
        stop_group(int(pid_path.read_text()), timeout, sig)
    with contextlib.suppress(FileNotFoundError):
        pid_path.unlink()


def tail(path, lines=30) -> str:
    with contextlib.suppress(OSError):
        text = pathlib.Path(path).read_text(errors='replace')
        return '--- %s\n%s' % (path, '\n'.join(text.splitlines()[-lines:]))
    return ''


class Service:
    """A server of the stack: a work directory and the processes in it.

    :param name: names the main process's log and pid file, and the work
        directory made when none is given (``<prefix or name>-XXXX`` under
        ``state_dir()/run``), which :meth:`stop` removes unless it is to be
        kept (``keep_workdir``, or env ``SIZEAWARE_KEEP_WORKDIR=1``); a
        ``workdir`` given by the caller is never removed.

    Subclasses implement ``_start(timeout)`` with :meth:`spawn`, :meth:`run`
    and the ``wait_*`` methods.
    """

    #: The signal that asks a process to stop (SIGKILL follows).
    STOP_SIGNAL = signal.SIGTERM
    #: Attributes :meth:`describe` hands to another process's :meth:`attach`.
    SHARED = ()

    def __init__(self, name, workdir=None, keep_workdir=None, prefix=None):
        self.name = name
        self.own_workdir = workdir is None
        if workdir is None:
            run = paths.state_dir() / 'run'
            run.mkdir(parents=True, exist_ok=True)
            workdir = tempfile.mkdtemp(prefix=(prefix or name) + '-', dir=run)
        self.workdir = pathlib.Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if keep_workdir is None:
            keep_workdir = os.environ.get('SIZEAWARE_KEEP_WORKDIR') == '1'
        self.keep_workdir = keep_workdir
        self.log_path = self.workdir / ('%s.log' % name)
        self.pids = {}      # process name -> PID, in start order
        self.attached = False
        self._procs = {}

    # -- lifecycle -----------------------------------------------------

    def start(self, timeout=120):
        """Start the service unless it runs. On failure, stop what was
        started and raise with the tails of the service's logs."""
        if self.running:
            return self
        started = time.monotonic()
        try:
            self._start(timeout)
        except Exception as exc:
            tails = self.log_tail()
            self.stop()
            raise RuntimeError('%s did not start: %s\n%s'
                               % (self.name, exc, tails)) from exc
        except BaseException:
            self.stop()
            raise
        log('%s up in %.1f s (%s)' % (self.name, time.monotonic() - started,
                                      self.workdir))
        return self

    def _start(self, timeout):
        raise NotImplementedError

    def stop(self, timeout=20.0):
        """Stop every process by its PID, the last started first, and
        remove the work directory unless it is kept. An attached service
        (see :meth:`attach`) is left alone."""
        if self.attached:
            return
        for name, pid in reversed(list(self.pids.items())):
            stop_group(pid, timeout, self.STOP_SIGNAL)
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.wait()
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / ('%s.pid' % name)).unlink()
        self.pids.clear()
        if self.own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self.pids) and all(map(alive, self.pids.values()))

    # -- processes -----------------------------------------------------

    def spawn(self, argv, name=None, env=None, cwd=None):
        """Start ``argv`` in the background, in its own session, logging to
        ``<name>.log``; its PID goes to ``<name>.pid``."""
        name = name or self.name
        pid_path = self.workdir / ('%s.pid' % name)
        stop_pidfile(pid_path)  # left by a crashed run in this work dir
        with open(self.workdir / ('%s.log' % name), 'ab') as out:
            proc = subprocess.Popen(
                [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=cwd or self.workdir,
                start_new_session=True)
        pid_path.write_text('%d\n' % proc.pid)
        self._procs[name] = proc
        self.pids[name] = proc.pid
        return proc

    def run(self, commands, timeout=300, env=None):
        """Run one-shot commands side by side, ``{name: argv}``, each
        logging to ``<name>.log``; raise with the log tail of each one that
        failed."""
        running = {}
        for name, argv in commands.items():
            with open(self.workdir / ('%s.log' % name), 'ab') as out:
                running[name] = subprocess.Popen(
                    [str(a) for a in argv], stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.workdir, env=env)
        failed = []
        for name, proc in running.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode:
                failed.append('%s failed (exit %s)\n%s' % (
                    name, proc.returncode,
                    tail(self.workdir / ('%s.log' % name))))
        if failed:
            raise RuntimeError('\n'.join(failed))

    def wait_until(self, ready, timeout, what):
        """Call ``ready()`` until it returns true; raise when one of the
        service's processes exits first, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError('%s exited with %s while waiting for '
                                       '%s' % (name, proc.returncode, what))
            try:
                if ready():
                    return
            except (OSError, RuntimeError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError('%s not ready after %ss (last: %s)'
                                   % (what, timeout, last))
            time.sleep(0.2)

    def wait_for_http(self, url, timeout=60, ok=(200, 300, 401)):
        """Wait until ``url`` answers with a status in ``ok``."""
        def ready():
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if status not in ok:
                raise RuntimeError('status %s' % status)
            return True
        self.wait_until(ready, timeout, url)

    def wait_for_port(self, port, timeout=60):
        """Wait until 127.0.0.1:``port`` accepts connections."""
        def ready():
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return True
        self.wait_until(ready, timeout, '127.0.0.1:%d' % port)

    def logs(self) -> list:
        """The log files whose tails explain a failure."""
        return [self.workdir / ('%s.log' % name) for name in self.pids]

    def log_tail(self, lines=30) -> str:
        return '\n'.join(filter(None, (tail(p, lines) for p in self.logs())))

    # -- sharing between processes -------------------------------------

    def describe(self) -> dict:
        """What another process needs to :meth:`attach` to this service."""
        cls = type(self)
        return {'class': '%s:%s' % (cls.__module__, cls.__qualname__),
                'name': self.name, 'workdir': str(self.workdir),
                'pids': self.pids,
                'shared': {k: getattr(self, k) for k in self.SHARED}}

    @staticmethod
    def attach(desc, own=False) -> 'Service':
        """The running service ``desc`` describes (see :meth:`describe`),
        used but not stopped, unless ``own``."""
        module, _, name = desc['class'].partition(':')
        cls = getattr(importlib.import_module(module), name)
        self = cls.__new__(cls)
        Service.__init__(self, desc['name'], desc['workdir'])
        self.__dict__.update(desc['shared'])
        self.pids = desc['pids']
        self.own_workdir = own
        self.attached = not own
        return self


@contextlib.contextmanager
def shared(name, make):
    """Service ``name`` of the run, from the file ``$SIZEAWARE_SERVICES``
    names (see ``python -m teststack services``); without that variable,
    ``make()`` started here and stopped on exit."""
    path = os.environ.get(SERVICES_ENV)
    if path:
        yield Service.attach(json.loads(pathlib.Path(path).read_text())[name])
        return
    service = make()
    try:
        yield service.start()
    finally:
        service.stop()
