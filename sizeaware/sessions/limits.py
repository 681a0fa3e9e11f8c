"""What the sessions of a storage may hold, checked before one is created.

Every limit is a clear 4xx before the first byte (429 for too many
sessions of a project, 507 for a full spool), never a full disk. A session
whose image is gone no longer counts: the check asks whether the project's
sessions are still wanted before it refuses, so deleted images do not lock
a project out of resumable uploads until their sessions expire.
"""

import os

from sizeaware import exceptions
from sizeaware.sessions import record as records


class Limits:
    """See the options of the same names."""

    def __init__(self, max_sessions_per_project=10,
                 max_bytes=100 * 1024 ** 3, inactivity_timeout=86400,
                 max_age=7 * 86400, retention=86400):
        self.max_sessions_per_project = max_sessions_per_project
        self.max_bytes = max_bytes
        self.inactivity_timeout = inactivity_timeout
        self.max_age = max_age
        self.retention = retention

    def expiry(self, created_at, now):
        return min(now + self.inactivity_timeout, created_at + self.max_age)


def check(limits, recs, project_id, size, now, directory=None,
          gone=lambda rec: False, spooled=True):
    """Refuse a new session of ``size`` bytes for ``project_id``.

    :param recs: the records of the storage's sessions.
    :param directory: the spool directory, whose disk must have room.
    :param spooled: whether the new session's bytes go to the spool (a
        store-native session's go to the store, and take no spool room).
    :param gone: ``gone(rec)``: whether a session of the project is no
        longer wanted (its image deleted); asked only when the project is
        at its limit. Such sessions are not counted.
    :raises sizeaware.exceptions.TooManySessions:
    :raises sizeaware.exceptions.SpoolFull:
    """
    live = [rec for rec in recs
            if rec.phase in records.LIVE and rec.expires_at > now]
    mine = [rec for rec in live if rec.project_id == project_id]
    if len(mine) >= limits.max_sessions_per_project:
        dead = [rec for rec in mine if gone(rec)]
        live = [rec for rec in live if rec not in dead]
        if len(mine) - len(dead) >= limits.max_sessions_per_project:
            raise exceptions.TooManySessions(
                'This project already has %d resumable uploads in '
                'progress, the most it may have; finish or cancel one '
                'first.' % (len(mine) - len(dead)))
    if not spooled:
        return
    reserved = sum(rec.size for rec in live if rec.location is None)
    if reserved + size > limits.max_bytes:
        raise exceptions.SpoolFull(
            'The upload spool cannot hold another %d bytes: %d of its '
            '%d bytes are reserved by uploads in progress.'
            % (size, reserved, limits.max_bytes))
    if directory is not None:
        stat = os.statvfs(directory)
        if stat.f_bavail * stat.f_frsize < size:
            raise exceptions.SpoolFull(
                'The upload spool cannot hold another %d bytes: its disk '
                'has %d bytes free.' % (size, stat.f_bavail * stat.f_frsize))
