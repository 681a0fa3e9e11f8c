"""The session record: what a session is and where it stands, as JSON.

The record says who owns the session, what it uploads, its phase and the
history of its phases; it never says which bytes are held (the storage
derives that from its pieces, written only after the data is durable), so
the two can never disagree about data.

Phases are oVirt's ``ImageTransferPhase`` names, so a client that knows
oVirt's image transfers reads them without a table:

``transferring``
    a request is writing bytes (stored while the session takes bytes; it
    is *reported* as ``paused_system`` while nobody writes);
``paused_system``
    nobody writes, or a finalize failed for a reason that is not the
    data's (the store or Glance unavailable, a worker killed): every byte
    is kept, ``error`` says what happened, and finalizing again needs no
    byte sent again;
``paused_user``
    paused by its owner: writes are refused until it is resumed;
``finalizing``
    the image is being handed to Glance;
``finished_success``, ``finished_failure``
    the image is Glance's; or the data was refused (format, checksum,
    size), with the reason in ``error``, and nothing reached the store;
``cancelled_user``, ``cancelled_system``
    cancelled by its owner; or expired, or its image deleted.

A session that ended keeps its record (not its data) for the retention
time, so its owner can still read how it ended.
"""

import dataclasses
import json

from sizeaware import durable

TRANSFERRING = 'transferring'
PAUSED_SYSTEM = 'paused_system'
PAUSED_USER = 'paused_user'
FINALIZING = 'finalizing'
FINISHED_SUCCESS = 'finished_success'
FINISHED_FAILURE = 'finished_failure'
CANCELLED_USER = 'cancelled_user'
CANCELLED_SYSTEM = 'cancelled_system'

#: Phases in which bytes may be written and the session finalized.
RESUMABLE = (TRANSFERRING, PAUSED_SYSTEM)
#: Phases in which a session holds (or is about to hold) storage.
LIVE = (TRANSFERRING, PAUSED_SYSTEM, PAUSED_USER, FINALIZING)
#: Phases after which nothing changes.
ENDED = (FINISHED_SUCCESS, FINISHED_FAILURE, CANCELLED_USER,
         CANCELLED_SYSTEM)


#: The phases records written by earlier releases name otherwise.
_EARLIER_NAMES = {'failed': FINISHED_FAILURE, 'finished': FINISHED_SUCCESS,
                  'cancelled': CANCELLED_USER}


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
    #: ``[phase, time]`` of every phase change, the first included.
    phases: list = dataclasses.field(default_factory=list)
    #: tus: the random part of the upload's URL, ``partial`` or ``final``
    #: for concatenation, the raw ``Upload-Metadata``, and for a final
    #: upload the sizes of the partial uploads it joins (their bytes are
    #: its ``part.<n>`` files instead of ``data``).
    upload_id: str = None
    concat: str = None
    metadata: str = None
    parts: list = None
    #: A store-native session (:mod:`~sizeaware.sessions.storage.
    #: in_store`): the backend its bytes go to and their location there,
    #: derived from the image id when it was created; ``handed_over`` once
    #: that location may have reached Glance, from when on the bytes are
    #: Glance's to remove, never the session's.
    store: str = None
    location: str = None
    handed_over: bool = False
    #: The store's own id of the object the session made (an RBD image's
    #: id, a completed S3 object's ETag): only that object is ever removed,
    #: never another of the same name made after the session ended.
    object_id: str = None
    #: Whether the session's bytes in the store were removed.
    dropped: bool = False
    #: An S3 store-native session (:mod:`~sizeaware.sessions.storage.
    #: bucket`): its multipart upload's id and its part size.
    multipart: str = None
    part_size: int = None

    def owned_by(self, owner):
        return (self.project_id, self.user_id) == tuple(owner[:2])

    @property
    def ended(self):
        return self.phase in ENDED

    def move_to(self, phase, now, error=None):
        """Change the phase, recording when; whether it changed."""
        changed = phase != self.phase or not self.phases
        self.phase, self.error = phase, error
        if changed:
            self.phases.append([phase, now])
        return changed

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = {f.name for f in dataclasses.fields(cls)}
        rec = cls(**{k: v for k, v in json.loads(text).items()
                     if k in fields})
        rec.phase = _EARLIER_NAMES.get(rec.phase, rec.phase)
        return rec


def new(image_id, target, caller, size, now, expires_at, **fields):
    """The record of a session created now, ``transferring``."""
    rec = Record(image_id=image_id, target=target, project_id=caller[0],
                 user_id=caller[1], size=size, created_at=now,
                 updated_at=now, expires_at=expires_at, **fields)
    rec.move_to(TRANSFERRING, now)
    return rec


def write_atomically(path, text):
    """Replace ``path`` with ``text``, durably (:mod:`sizeaware.durable`)."""
    durable.replace(path, text.encode('utf-8'))


fsync_dir = durable.fsync_dir


def log_change(log, rec, request_id):
    """The one line every phase change gets."""
    log.info('Upload session %s: request_id=%s image_id=%s target=%s '
             'project_id=%s size=%d error=%s', rec.phase, request_id,
             rec.image_id, rec.target, rec.project_id, rec.size,
             json.dumps(rec.error))
