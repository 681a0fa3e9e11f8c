"""Command line of the test stack (standard library only).

``python -m teststack up [--release 33] [--port N] [--no-filter]``
    Glance with the sizeaware filter, the unauthenticated ``default``
    flavor, a private PostgreSQL (``--database sqlite`` for a quick look)
    and a filesystem store, under uwsgi with 2 processes of 4 threads as
    deployments run it; stays up until SIGINT/SIGTERM.

``python -m teststack venvs [tests|keystone|swift|tempest|33|30|29 ...]``
    Build (or check) the virtualenvs, side by side; print their paths in
    the order asked.

``python -m teststack services start|stop FILE``
    Start the servers one test run shares (PostgreSQL, Keystone) and
    describe them in FILE, for ``SIZEAWARE_SERVICES=FILE``; or stop those
    FILE describes, by their PIDs.

``python -m teststack clean``
    Stop Glances whose starting process died; remove their work dirs.
"""

import argparse
from concurrent import futures
import json
import os
import pathlib
import signal
import sys
import time

from teststack import glance as glance_mod
from teststack import keystone
from teststack import paths
from teststack import postgres
from teststack import process
from teststack import swift
from teststack import tempest
from teststack import venvs

VENVS = {'tests': venvs.tests_venv, 'keystone': keystone.keystone_venv,
         'swift': swift.swift_venv, 'tempest': tempest.tempest_venv}


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signum)


def _parse_option(text):
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError('expected KEY=VALUE, got %r' % text)
    return key.strip(), value.strip()


def cmd_up(args):
    for workdir in glance_mod.clean_stale():
        print('removed stale %s' % workdir, file=sys.stderr)
    venv = venvs.glance_venv(args.release)
    tests = None
    if not args.no_tests_venv:
        tests = venvs.tests_venv()
    filter_options = dict(args.filter_option or ())
    database = None
    if args.database == 'sqlite':
        print('warning: SQLite answers "database is locked" (500) under '
              'concurrent uploads; use it for a quick look only',
              file=sys.stderr)
    else:
        database = postgres.Postgres(keep_workdir=args.keep)
    stack = glance_mod.Glance(
        args.release, with_filter=not args.no_filter,
        filter_options=filter_options, flavor=args.flavor, port=args.port,
        workdir=args.workdir, processes=args.processes, threads=args.threads,
        keep_workdir=args.keep, server=args.server,
        resumable=None if args.no_filter else {})
    # Signals stop the stack in the finally below, also while starting.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        if database is not None:
            database.start()
            stack.database_url = database.create_database('glance')
        stack.start(timeout=args.timeout)
        out = sys.stdout
        print('Glance %s is up%s, flavor %s' % (
            args.release,
            '' if args.no_filter else ' with the resumable, sizeaware and '
            'download filters', args.flavor), file=out)
        if args.server == 'uwsgi':
            served = 'uwsgi, %d processes x %d threads' % (args.processes,
                                                           args.threads)
        else:
            served = 'eventlet glance-api, %d workers' % args.processes
        print('  served by:     %s' % served, file=out)
        print('  database:      %s' % (
            'SQLite (not for concurrent uploads)' if database is None
            else 'PostgreSQL %s (pid file %s)' % (
                stack.database_url, database.workdir / 'postgres.pid')),
            file=out)
        print('  endpoint:      %s' % stack.url, file=out)
        for name, path in stack.store_dirs.items():
            print('  store %-8s %s' % (name + ':', path), file=out)
        print('  staging:       %s' % stack.staging_dir, file=out)
        if stack.resumable is not None:
            print('  upload spool:  %s' % stack.spool_dir, file=out)
        print('  tasks:         %s' % stack.tasks_dir, file=out)
        print('  config:        %s' % stack.conf_path, file=out)
        print('  paste ini:     %s' % stack.paste_path, file=out)
        print('  log:           %s' % stack.log_path, file=out)
        print('  venv:          %s' % venv, file=out)
        if tests is not None and args.flavor == 'default':
            print('  try:           %s/bin/glance --os-image-url %s '
                  '--os-auth-token dummy image-list'
                  % (tests, stack.url), file=out)
        print('Stop with Ctrl-C (or SIGTERM to pid %d).'
              % os.getpid(), file=out, flush=True)
        while stack.running:
            time.sleep(0.5)
        print('Glance exited; log tail:\n%s' % stack.log_tail(),
              file=sys.stderr)
        return 1
    except _Stop:
        print('stopping Glance', file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        if database is not None:
            database.stop()


def cmd_venvs(args):
    names = args.names or ['tests'] + sorted(venvs.GLANCE_RELEASES)
    with futures.ThreadPoolExecutor(len(names)) as pool:
        for path in pool.map(lambda name: VENVS.get(
                name, lambda: venvs.glance_venv(name))(), names):
            print(path, flush=True)
    return 0


def cmd_services(args):
    path = pathlib.Path(args.file)
    if args.action == 'stop':
        if path.is_file():
            for desc in reversed(json.loads(path.read_text()).values()):
                process.Service.attach(desc, own=True).stop()
            path.unlink()
        return 0
    started = {}
    try:
        started['postgres'] = postgres.Postgres().start()
        started['keystone'] = keystone.Keystone(
            started['postgres'].create_database('keystone')).start()
    except BaseException:
        for service in reversed(started.values()):
            service.stop()
        raise
    path.write_text(json.dumps({name: service.describe()
                                for name, service in started.items()},
                               indent=1, default=str) + '\n')
    return 0


def cmd_clean(args):
    for workdir in glance_mod.clean_stale():
        print('removed %s' % workdir)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m teststack')
    sub = parser.add_subparsers(dest='command', required=True)

    up = sub.add_parser('up', help='run Glance until interrupted')
    up.add_argument('--release', default='33',
                    choices=sorted(venvs.GLANCE_RELEASES))
    up.add_argument('--port', type=int, default=None,
                    help='default: a free port')
    up.add_argument('--no-filter', action='store_true',
                    help='serve the shipped pipelines without our filters')
    up.add_argument('--filter-option', type=_parse_option, action='append',
                    metavar='KEY=VALUE',
                    help='extra [filter:sizeaware] line (repeatable)')
    up.add_argument('--flavor', default='default',
                    help='paste flavor: default (unauthenticated) or '
                         '%s (identity from X-* headers)'
                         % glance_mod.TEST_FLAVOR)
    up.add_argument('--workdir', default=None,
                    help='default: a new directory under %s'
                         % (paths.state_dir() / 'run'))
    up.add_argument('--keep', action='store_true', default=None,
                    help='keep the work directory on exit')
    up.add_argument('--database', choices=('postgres', 'sqlite'),
                    default='postgres',
                    help='postgres (default): a private cluster, stopped '
                         'with Glance; sqlite fails under concurrent '
                         'uploads')
    up.add_argument('--server', choices=('uwsgi', 'eventlet'),
                    default='uwsgi',
                    help='eventlet: the glance-api of releases 30 and 29')
    up.add_argument('--processes', type=int, default=2)
    up.add_argument('--threads', type=int, default=4)
    up.add_argument('--timeout', type=float, default=120)
    up.add_argument('--no-tests-venv', action='store_true',
                    help='do not build the tests venv (glance client)')
    up.set_defaults(func=cmd_up)

    vv = sub.add_parser('venvs', help='build the virtualenvs')
    vv.add_argument('names', nargs='*',
                    help='%s and/or Glance releases (%s)'
                         % (', '.join(VENVS),
                            ', '.join(sorted(venvs.GLANCE_RELEASES))))
    vv.set_defaults(func=cmd_venvs)

    sv = sub.add_parser('services', help='start or stop the servers a '
                                         'test run shares')
    sv.add_argument('action', choices=('start', 'stop'))
    sv.add_argument('file', help='the JSON file describing them')
    sv.set_defaults(func=cmd_services)

    cl = sub.add_parser('clean', help='stop Glances left by crashed runs '
                                      'and remove their work directories')
    cl.set_defaults(func=cmd_clean)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RuntimeError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
