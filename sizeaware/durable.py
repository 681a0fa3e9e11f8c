"""Files that survive a crash: replaced whole, never seen half-written.

The server's session records and the client's state files are both
rewritten while a process may be killed at any moment; both need the same
four steps (a temporary file of the writer's own, fsync, rename over the
old one, fsync of the directory so that the rename survives too), so they
live here once, with nothing but the standard library.
"""

import os
import tempfile


def replace(path, data, prefix=None):
    """Replace the file ``path`` with the bytes ``data``, durably.

    :param prefix: the temporary file's name starts with it (default
        ``.<name>.``), so a caller can find what a killed write left.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(
        dir=directory or '.', suffix='.tmp',
        prefix='.%s.' % name if prefix is None else prefix)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory or '.')


def fsync_dir(path):
    """Make a rename or an unlink in the directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
