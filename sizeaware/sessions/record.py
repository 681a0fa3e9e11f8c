"""The session record: what a session is, as JSON on disk.

The record says who owns the session, what it uploads and where it
stands; it never says which bytes are held (``spool`` derives that from
the ranges file, written only after the data is synced), so the two can
never disagree about data.
"""

import dataclasses
import json
import os
import threading

#: A session's phases, as in oVirt's ImageTransfer. ``paused`` is never
#: stored: it is how a ``transferring`` session with no write in progress
#: is reported.
TRANSFERRING = 'transferring'
PAUSED = 'paused'
FINALIZING = 'finalizing'
FINISHED = 'finished'
FAILED = 'failed'
CANCELLED = 'cancelled'
#: Phases in which a session holds (or is about to hold) spool space.
LIVE_PHASES = (TRANSFERRING, FINALIZING)


@dataclasses.dataclass
class Record:
    image_id: str
    target: str
    project_id: str
    user_id: str
    size: int
    created_at: float
    updated_at: float
    expires_at: float
    phase: str = TRANSFERRING
    sha256: str = None
    error: str = None
    #: tus: the random part of the upload's URL, ``partial`` or ``final``
    #: for concatenation, the raw ``Upload-Metadata``, and for a final
    #: upload the sizes of the partial uploads it joins (their bytes are
    #: its ``part.<n>`` files instead of ``data``).
    upload_id: str = None
    concat: str = None
    metadata: str = None
    parts: list = None

    def owned_by(self, owner):
        return (self.project_id, self.user_id) == tuple(owner)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items()
                      if k in fields})


def write_atomically(path, text):
    """Replace ``path`` with ``text``: durable once this returns, and
    never seen half-written (a temporary file, fsync, rename, fsync of the
    directory)."""
    tmp = '%s.tmp.%d.%d' % (path, os.getpid(), threading.get_ident())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
