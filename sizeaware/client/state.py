"""What a transfer keeps on disk to resume after its process was killed.

A state file is JSON, replaced atomically (written beside, fsynced,
renamed), so a kill at any moment leaves the old state or the new one.
"""

import hashlib
import json
import os
import pathlib


def default_dir():
    """``$XDG_CACHE_HOME/sizeaware`` (``~/.cache/sizeaware``)."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache')
    return pathlib.Path(base) / 'sizeaware'


def upload_path(state_dir, endpoint, image_id, target):
    """The state file of one upload: one per Glance, image and target."""
    key = hashlib.sha256(('%s %s %s' % (endpoint, image_id, target))
                         .encode()).hexdigest()[:24]
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


def save(path, data):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + '.tmp')
    with open(temporary, 'w') as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def remove(path):
    for name in (pathlib.Path(path),
                 pathlib.Path(path).with_name(pathlib.Path(path).name
                                              + '.tmp')):
        try:
            name.unlink()
        except FileNotFoundError:
            pass
