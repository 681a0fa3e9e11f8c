"""Where a session's bytes live, behind one interface.

The protocols (:mod:`sizeaware.sessions.protocols`) and the receive flow
(:mod:`sizeaware.sessions.receive`) speak only to these two interfaces, as
tusd's handler speaks to its ``DataStore`` and ``Upload``: a new storage
is one new module, nothing else changes.

:class:`Storage`
    the sessions of one deployment: find one, create one, list records,
    and a bounded sweep (:mod:`~sizeaware.sessions.reaper`) any request
    can afford.
:class:`Session`
    one session opened for one request: write a range (a stream class for
    the stream base, with a lock on those bytes), claim bytes with their
    CRC-32C, the held ranges and pieces, read the whole image back, move
    through the phases, end (drop the data, keep the record) and remove.

:mod:`~sizeaware.sessions.storage.spool` is the first implementation: a
directory on the API node, or on a filesystem API nodes share.
"""

import abc

from sizeaware import exceptions
from sizeaware import stream
from sizeaware.subrequests import Caller

__all__ = ['Caller', 'Session', 'Storage', 'Writer']


class Writer(stream.BodyStream):
    """The stream base for a request's body going into a session: each
    storage's writer overrides :meth:`store` alone.

    :param limit: the most bytes the body may have (a tus body of unknown
        length must stop at the upload's length).
    :param digest: a hash object fed every byte written, for a digest the
        request declared (checked by the receive flow before the bytes are
        claimed).
    """

    def __init__(self, pull, expected=None, delimited=False, *, limit=None,
                 digest=None):
        super().__init__(pull, expected, delimited)
        self.limit = limit
        self.digest = digest

    def chunk_update(self, data):
        if self.limit is not None and self.received + len(data) > self.limit:
            raise exceptions.BeyondUploadLength(
                'The body goes past the upload\'s length.')
        self.store(data)
        if self.digest is not None:
            self.digest.update(data)

    def store(self, data):
        """Write ``data``, the next piece of the body."""
        raise NotImplementedError

    def unclaimed(self):
        """``(start, end, crc32c)`` of the bytes written and not yet
        claimed."""
        raise NotImplementedError


class Storage(abc.ABC):

    @abc.abstractmethod
    def session(self, image_id, target, caller, part=None, ended=False):
        """The session of this image and target, or None.

        :param part: the upload id of a tus partial upload of the image.
        :param ended: also one that ended (for its status document).
        :raises sizeaware.exceptions.SessionNotFound: it is someone
            else's.
        """

    @abc.abstractmethod
    def create(self, image_id, target, caller, size, sha256=None, *,
               part=None, reserved=False, gone=None, **fields):
        """The live session of this image and target, created if none.

        :param gone: ``gone(record)``, whether a session of the caller's
            project is no longer wanted, asked at the project's limit.
        """

    @abc.abstractmethod
    def records(self, limit=None):
        """``(key, record)`` of the sessions, at most ``limit``."""

    @abc.abstractmethod
    def open(self, key, caller):
        """The session a :meth:`records` key names."""

    @abc.abstractmethod
    def claim_sweep(self, interval, now):
        """Whether this caller sweeps now: at most once per ``interval``
        seconds across every process and node."""

    @abc.abstractmethod
    def sweep_leftovers(self, now):
        """Remove what crashed creations and removals left."""


class Session(abc.ABC):
    record = None

    @abc.abstractmethod
    def close(self):
        """Release every lock this request holds."""

    @abc.abstractmethod
    def held(self):
        """The ranges held, ``[(start, end), ...]``, end exclusive."""

    @abc.abstractmethod
    def pieces(self):
        """``[(start, end, crc32c), ...]`` as claimed."""

    @abc.abstractmethod
    def writer(self, first, last, checkpoints=True, limit=None,
               digest=None):
        """A context holding bytes ``first`` to ``last`` for this request,
        yielding a :class:`Writer` class (a partial taking ``pull``,
        ``expected`` and ``delimited``) that writes them."""

    @abc.abstractmethod
    def commit(self, start, end, crc=None, final=True, synced=False):
        """Claim ``[start, end)``; ``(held, now_finalizing)``."""

    @abc.abstractmethod
    def reader(self, stream_class, live=None):
        """The whole image, read back through the stream base."""

    @abc.abstractmethod
    def set_phase(self, phase, error=None):
        """Move to ``phase``, logging the change."""

    @abc.abstractmethod
    def end(self, phase, error=None):
        """End the session: its data goes, its record stays for the
        retention time."""

    @abc.abstractmethod
    def remove(self, only_if_idle=False):
        """Delete the session, record and all; 1 if removed."""

    @abc.abstractmethod
    def writing(self):
        """Whether a request writes bytes of this session now."""

    @abc.abstractmethod
    def finalizing_elsewhere(self):
        """Whether another request is finalizing this session now."""

    @abc.abstractmethod
    def refresh(self):
        """The record read afresh, what dead writers left made good."""

    @abc.abstractmethod
    def check_writable(self):
        """Raise UploadConflict unless bytes may be written now."""

    @abc.abstractmethod
    def touch(self):
        """Extend the session, as every request does."""

    @abc.abstractmethod
    def cancel(self, phase, error=None):
        """:meth:`end`, refused (UploadConflict) while another request
        finalizes."""

    @abc.abstractmethod
    def wait_idle(self, timeout):
        """Wait until no request writes; whether none does."""

    @abc.abstractmethod
    def hand_over(self, handed=True):
        """Mark a store-native session's bytes as Glance's, before their
        location is sent (``handed=False``: Glance refused it)."""

    @abc.abstractmethod
    def stored_size(self):
        """The size of the image's bytes as stored."""

    @abc.abstractmethod
    def join(self, partials):
        """Take the bytes of complete sessions, in order, as this one's
        (tus concatenation); ``(held, now_finalizing)``."""
