"""What a transfer keeps on disk to resume after its process was killed.

A state file is JSON, replaced atomically: written to a temporary file of
its own beside it (a name no other writer uses), fsynced, renamed over it,
and the directory fsynced so that the rename itself survives a crash. A
kill at any moment leaves the old state or the new one.
"""

import glob
import json
import os
import pathlib

from sizeaware import digests
from sizeaware import durable


def default_dir():
    """``$XDG_CACHE_HOME/sizeaware`` (``~/.cache/sizeaware``)."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache')
    return pathlib.Path(base) / 'sizeaware'


def upload_path(state_dir, endpoint, image_id, target):
    """The state file of one upload: one per Glance, image and target."""
    name = '%s %s %s' % (endpoint, image_id, target)
    key = digests.new('sha256', name.encode()).hexdigest()[:24]
    return pathlib.Path(state_dir) / ('upload-%s.json' % key)


def load(path):
    """The state in ``path``, or None when there is none (or it is
    unreadable: a state is an optimisation, never a source of truth)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _temporary_prefix(path):
    return '.%s.' % path.name


def save(path, data):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.replace(path, json.dumps(data).encode(),
                    prefix=_temporary_prefix(path))


fsync_dir = durable.fsync_dir


def remove(path):
    """Remove the state in ``path`` and what a killed :func:`save` left."""
    path = pathlib.Path(path)
    _unlink(path)
    for leftover in path.parent.glob(
            glob.escape(_temporary_prefix(path)) + '*.tmp'):
        _unlink(leftover)


def _unlink(path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass
