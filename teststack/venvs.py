"""Build and reuse the virtualenvs the test stack runs servers from.

Only the standard library is needed here: the stack code drives the
servers' venvs by path, whichever interpreter runs it.

Each venv lives in ``paths.venvs_dir()/<name>`` and carries a marker file
holding a hash of everything it was built from (interpreter, requirement
lines, the packaging files of the editable checkouts). A second call with
the same inputs returns at once. A call with different requirement lines or
packaging files re-runs the pip install in place (a server running from the
venv keeps running); a different interpreter, a failed or missing build
recreates the venv from scratch. Requirements are installed first, then
the editable checkouts with the requirement lines as constraints, so
installing ``sizeaware`` never moves a pinned dependency of Glance; venvs
are built side by side, but the editable installs one at a time (pbr
writes its metadata into the checkout). pip's cache is used, so a rebuild
mostly reuses wheels (uwsgi only compiles once).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from teststack import paths
from teststack import process

MARKER = '.sizeaware-venv.json'

# pip requirement lines per Glance release. Every release also gets
# _GLANCE_EXTRAS: uwsgi serves Glance, boto3 and python-swiftclient let the
# S3 and Swift stores be used, psycopg2 lets its database be PostgreSQL.
_GLANCE_EXTRAS = ['uwsgi', 'boto3', 'python-swiftclient', 'psycopg2-binary']
GLANCE_RELEASES = {
    '33': ['glance==33.0.0'] + _GLANCE_EXTRAS,
    '30': ['glance==30.2.0', 'glance-store<5', 'oslo.db<18'] + _GLANCE_EXTRAS,
    '29': ['glance==29.2.1', 'glance-store<4.9', 'oslo.db<18',
           'oslo.utils<9'] + _GLANCE_EXTRAS,
}

# Extension modules Debian builds for its /usr/bin/python3 only (packages
# python3-rados and python3-rbd, see bindep.txt), linked into every Glance
# venv: glance_store's rbd driver imports them. They are not on PyPI.
SYSTEM_MODULES = ('rados', 'rbd')
SYSTEM_SITE_PACKAGES = pathlib.Path('/usr/lib/python3/dist-packages')
_SYSTEM_PTH = 'sizeaware-system-modules.pth'

# Files of an editable checkout whose content decides what pip installs
# (dependencies, entry points): a change to them rebuilds the venv.
_PACKAGING_FILES = ('setup.cfg', 'setup.py', 'pyproject.toml',
                    'requirements.txt')


def default_python() -> str:
    """The interpreter new venvs are made from (``python3`` on PATH)."""
    return shutil.which('python3') or sys.executable


def venv_python(venv) -> pathlib.Path:
    return pathlib.Path(venv) / 'bin' / 'python'


def venv_bin(venv, name) -> pathlib.Path:
    return pathlib.Path(venv) / 'bin' / name


def _python_identity(python):
    out = subprocess.run(
        [python, '-c',
         'import sys; print(sys.version); print(sys.base_prefix)'],
        check=True, capture_output=True, text=True).stdout
    return out.strip()


def _inputs(name, requirements, editable, system_site_packages, python,
            editable_deps=True):
    packaging = {}
    for repo in editable:
        repo = pathlib.Path(repo).resolve()
        for fname in _PACKAGING_FILES:
            path = repo / fname
            if path.is_file():
                packaging['%s/%s' % (repo, fname)] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
    inputs = {
        'name': name,
        'python': _python_identity(python),
        'requirements': list(requirements),
        'editable': [str(pathlib.Path(p).resolve()) for p in editable],
        'packaging': packaging,
        'system_site_packages': bool(system_site_packages),
    }
    if not editable_deps:  # absent otherwise: other venvs keep their digest
        inputs['editable_no_deps'] = True
    return inputs


def _digest(inputs):
    return hashlib.sha256(
        json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _locked(path):
    """Serialize builds of one venv between processes (e.g. xdist)."""
    with open(path, 'a') as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv, log_path):
    """Run a build step, its output to the build log; raise with its tail."""
    with open(log_path, 'ab') as log:
        log.write(('\n$ %s\n' % ' '.join(map(str, argv))).encode())
        log.flush()
        proc = subprocess.run([str(a) for a in argv], stdout=log,
                              stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode:
        tail = '\n'.join(pathlib.Path(log_path).read_text(
            errors='replace').splitlines()[-30:])
        raise RuntimeError('%s failed (exit %d), see %s:\n%s'
                           % (' '.join(map(str, argv[:4])), proc.returncode,
                              log_path, tail))


def ensure_venv(name: str, requirements, *, editable=(),
                editable_deps=True, system_site_packages=False,
                python=None) -> pathlib.Path:
    """Make sure venv ``name`` exists, built from these inputs.

    :param requirements: pip requirement lines; they also constrain the
        editable installs.
    :param editable: checkouts installed with ``pip install -e``.
    :param editable_deps: False to install them with ``--no-deps``, without
        their dependencies (the venv is rebuilt from scratch when this
        changes, so none are left from an earlier build).
    :param system_site_packages: let the venv see the interpreter's
        site-packages (e.g. Debian's ``python3-rados``).
    :param python: the interpreter to make the venv from (default:
        ``python3`` on PATH).
    :returns: the venv's path.
    """
    python = python or default_python()
    requirements = list(requirements)
    editable = [pathlib.Path(p).resolve() for p in editable]
    venvs = paths.venvs_dir()
    venv = venvs / name
    inputs = _inputs(name, requirements, editable, system_site_packages,
                     python, editable_deps)
    digest = _digest(inputs)
    with _locked(venvs / ('%s.lock' % name)):
        try:
            marker = json.loads((venv / MARKER).read_text())
        except (FileNotFoundError, ValueError):
            marker = None
        if (marker and marker.get('digest') == digest
                and venv_python(venv).exists()):
            return venv
        started = time.monotonic()
        log_path = venvs / ('%s.build.log' % name)
        py = venv_python(venv)
        same_base = (marker is not None and py.exists()
                     and marker.get('python') == inputs['python']
                     and marker.get('system_site_packages')
                     == inputs['system_site_packages']
                     and marker.get('editable_no_deps')
                     == inputs.get('editable_no_deps'))
        if same_base:
            # Only requirements or packaging changed: update in place, so
            # a server running from this venv is not pulled from under it.
            process.log('venv %s: inputs changed, updating in place' % name)
            (venv / MARKER).unlink()
        else:
            if venv.exists():
                process.log('venv %s: rebuilding from scratch' % name)
                shutil.rmtree(venv)
            else:
                process.log('venv %s: creating' % name)
            with contextlib.suppress(FileNotFoundError):
                log_path.unlink()
            argv = [python, '-m', 'venv']
            if system_site_packages:
                argv.append('--system-site-packages')
            _run(argv + [venv], log_path)
            process.log('venv %s: upgrading pip' % name)
            _run([py, '-m', 'pip', 'install', '--upgrade', 'pip'], log_path)
        req_file = venv / 'sizeaware-requirements.txt'
        req_file.write_text(''.join('%s\n' % r for r in requirements))
        pip = [py, '-m', 'pip', 'install', '--disable-pip-version-check',
               '-c', req_file]
        process.log('venv %s: installing %s%s' % (
            name, ' '.join(requirements),
            ''.join(' -e %s' % r for r in editable)))
        # No marker until these succeeded.
        if requirements:
            _run(pip + ['-r', req_file], log_path)
        if editable:
            with _locked(venvs / 'editable.lock'):
                no_deps = [] if editable_deps else ['--no-deps']
                _run(pip + no_deps + [a for r in editable for a in ('-e', r)],
                     log_path)
        elapsed = time.monotonic() - started
        marker = dict(inputs, digest=digest, built_in_s=round(elapsed, 1),
                      built_at=time.strftime('%Y-%m-%dT%H:%M:%S'))
        (venv / MARKER).write_text(json.dumps(marker, indent=1) + '\n')
        process.log('venv %s: ready in %.1f s (log: %s)' % (name, elapsed,
                                                      log_path))
    return venv


def link_system_modules(venv, names=SYSTEM_MODULES,
                        source=SYSTEM_SITE_PACKAGES) -> list:
    """Make the extension modules ``names`` of ``source`` importable in
    ``venv``, and nothing else of ``source``.

    Each module built for the venv's Python version is linked into
    ``<venv>/system-modules/``, which a ``.pth`` file puts on the venv's
    path. Modules missing from ``source`` are left out (a Glance without
    them only lacks its rbd store). Safe to call again and from several
    processes at once.

    :returns: the names linked.
    """
    venv = pathlib.Path(venv)
    site = sorted(venv.glob('lib/python3.*/site-packages'))
    if not site:
        raise RuntimeError('%s has no site-packages' % venv)
    # lib/python3.11/site-packages -> cpython-311
    tag = 'cpython-%s' % site[-1].parent.name[len('python'):].replace('.', '')
    target = venv / 'system-modules'
    target.mkdir(exist_ok=True)
    linked = []
    for name in names:
        found = sorted(pathlib.Path(source).glob('%s.%s-*.so' % (name, tag)))
        if not found:
            process.log('venv %s: no module %s for %s in %s' % (
                venv.name, name, tag, source))
            continue
        link = target / found[0].name
        if not (link.is_symlink() and link.resolve() == found[0].resolve()):
            tmp = target / ('.%s.%d' % (found[0].name, os.getpid()))
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(found[0])
            os.replace(tmp, link)
        linked.append(name)
    pth = site[-1] / _SYSTEM_PTH
    if not pth.is_file() or pth.read_text() != '%s\n' % target:
        tmp = target / ('.pth.%d' % os.getpid())
        tmp.write_text('%s\n' % target)
        os.replace(tmp, pth)
    return linked


def glance_venv(release: str) -> pathlib.Path:
    """The venv ``glance-<release>``: Glance, uwsgi, boto3 and this repo
    installed editable, and Debian's ``rados`` and ``rbd`` modules linked
    in (see :func:`link_system_modules`)."""
    try:
        requirements = GLANCE_RELEASES[str(release)]
    except KeyError:
        raise ValueError('unknown Glance release %r (known: %s)'
                         % (release, ', '.join(GLANCE_RELEASES))) from None
    venv = ensure_venv('glance-%s' % release, requirements,
                       editable=[paths.REPO])
    link_system_modules(venv)
    return venv


def _test_requirements():
    path = paths.REPO / 'test-requirements.txt'
    lines = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.split('#', 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def tests_venv() -> pathlib.Path:
    """The venv ``tests``: this repo editable, test-requirements.txt,
    boto3 and requests."""
    return ensure_venv('tests', _test_requirements() + ['boto3', 'requests'],
                       editable=[paths.REPO])


if __name__ == '__main__':  # the same as python3 -m teststack venvs ...
    from teststack import __main__ as cli
    sys.exit(cli.main(['venvs', *sys.argv[1:]]))
