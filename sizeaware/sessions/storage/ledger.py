"""What every session does, wherever its record, pieces and locks live.

A session's rules (which phase takes bytes, who finalizes, what an end
keeps, what a dead worker leaves) are the same in the spool directory
(:mod:`~sizeaware.sessions.storage.spool`) and in the cluster of an RBD
store (:mod:`~sizeaware.sessions.storage.cluster`): they are written once,
here, over a few primitives each ledger provides:

``_locked()``
    the record lock, held while the record and the pieces are read or
    changed, across every process and node that shares the ledger;
``_read_record()``, ``_write_record(rec)``
    the record, read and replaced atomically;
``pieces()``, ``_append_piece(start, end, crc)``, ``_clear_pieces()``
    the claims, each durable once appended;
``_take_finalize()``, ``_release_finalize()``, ``_finalizer_gone()``
    the finalize lock: held by the request finalizing the session for as
    long as it runs, and known to be free once its holder died;
``_recover_writers(rec)``
    claim what killed writers left, where the ledger can tell;
``_drop_data()``
    remove the bytes when the session ends (a store-native session's only
    until they were handed over: then they are the image's, and Glance
    deletes them with it);
``_open_data(writable)``
    the bytes (:mod:`~sizeaware.sessions.storage.blocks`).
"""

import time

from oslo_log import log as logging

from sizeaware import exceptions
from sizeaware.sessions import locks
from sizeaware.sessions import ranges
from sizeaware.sessions import reaper
from sizeaware.sessions import record as records
from sizeaware.sessions import storage

LOG = logging.getLogger(__name__)


class LedgerSession(storage.Session):
    """A session's rules over a ledger's primitives; see the module
    docstring."""

    #: Whether this request holds the finalize lock.
    finalizer = False

    def assemble(self):
        """Make the stored bytes the one object the store serves, before
        finalize judges them; nothing to do where they are already."""

    def seal(self):
        """Make the judged object what the store's driver serves, before
        its location goes to Glance; nothing to do where it is already.

        :raises sizeaware.exceptions.CommitFailed: the store refused.
        """

    def held(self):
        held = []
        for start, end, _ in self.pieces():
            held = ranges.add(held, start, end)
        return held

    def refresh(self):
        """Read the record afresh, making good what dead workers left."""
        with self._locked():
            self._recover()
        return self.record

    def commit(self, start, end, crc=None, final=True, synced=False):
        """Claim bytes ``start`` to ``end`` (exclusive), whose CRC-32C is
        ``crc``, after syncing them, and extend the session.

        :param final: the request's last claim: a session in a resumable
            phase that is then complete moves to ``finalizing`` (once,
            whoever completes it).
        :returns: ``(held, now_finalizing)``.
        :raises sizeaware.exceptions.UploadConflict: the session takes no
            bytes (it is finalizing, or ended).
        """
        if end > start and not synced:
            self._sync_data()
        with self._locked():
            self._recover()
            rec = self.record
            held = self.held()
            if rec.phase not in records.LIVE or (
                    rec.phase == records.FINALIZING):
                if ranges.covers(held, start, end):
                    # Claimed already (at a checkpoint) before another
                    # request completed the image: kept, not a conflict.
                    return held, False
                raise phase_conflict(rec)
            if end > start and not ranges.covers(held, start, end):
                self._append_piece(start, end, crc)
                held = ranges.add(held, start, end)
            finalizing = (final and rec.phase in records.RESUMABLE
                          and _complete(held, rec.size))
            if finalizing:
                # Held until this request ends, also when its worker dies.
                if not self._take_finalize():
                    raise phase_conflict(records.Record(
                        **dict(vars(rec), phase=records.FINALIZING)))
                self.finalizer = True
                self._move(rec, records.FINALIZING)
            self._touch(rec)
            return held, finalizing

    def wait_idle(self, timeout, interval=0.05):
        """Wait until no request writes bytes of this session (one whose
        client went away may still be claiming what arrived), at most
        ``timeout`` seconds; whether it is idle."""
        deadline = time.monotonic() + timeout
        while self.writing():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    def hand_over(self, handed=True):
        """Mark a store-native session's bytes as (possibly) Glance's,
        durably, before their location is sent: from then on no end of
        the session removes them. ``handed=False`` takes that back once
        Glance refused the location.

        :raises sizeaware.exceptions.UploadConflict: the session is not
            finalizing (handing over is finalize's).
        """
        with self._locked():
            self._recover()
            rec = self.record
            if handed and rec.phase != records.FINALIZING:
                raise phase_conflict(rec)
            rec.handed_over = handed
            self._touch(rec)

    def stored_size(self):
        """The size of the image's bytes as stored."""
        with self._open_data(writable=False) as data:
            return data.size()

    def check_writable(self):
        """:raises UploadConflict: unless bytes may be written now."""
        rec = self.refresh()
        if rec.phase not in records.RESUMABLE:
            raise phase_conflict(rec)

    def touch(self):
        """Extend the session, as every request does."""
        with self._locked():
            self._touch(self._read_record())

    def set_phase(self, phase, error=None, expect=None):
        """Move to ``phase``.

        :param expect: the phases it may move from; UploadConflict from
            any other.
        """
        with self._locked():
            self._recover()
            rec = self.record
            if expect is not None and rec.phase not in expect:
                raise phase_conflict(rec)
            self._move(rec, phase, error)
            self._touch(rec)
        if phase not in (records.FINALIZING,) and self.finalizer:
            self._release_finalize()
            self.finalizer = False

    def end(self, phase, error=None, only_if=None):
        """End the session as ``phase``: the pieces are dropped before the
        data, so nothing ever claims a byte that is no longer on disk; the
        record stays for the status document. A session that ended stays
        as it ended.

        :param only_if: ``only_if(record)``, decided under the record's
            lock on the record as it is then: end only if it holds.
        :returns: whether it ended the session now.
        """
        try:
            with self._locked():
                self._recover()
                rec = self.record
                if rec.ended or (only_if is not None and not only_if(rec)):
                    return False
                self._end_locked(rec, phase, error)
                return True
        finally:
            if self.finalizer:
                self._release_finalize()
                self.finalizer = False

    def cancel(self, phase=records.CANCELLED_USER, error=None):
        """Cancel: as :meth:`end`, refused while another request is
        finalizing the session (its client gets the real verdict). The
        phase is read and changed under one lock, which a request taking
        the session to ``finalizing`` needs too."""
        with self._locked():
            self._recover()
            rec = self.record
            if rec.ended:
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.')
            if rec.phase == records.FINALIZING:
                raise exceptions.UploadConflict(
                    'The upload session of this image is being finalized; '
                    'it can no longer be cancelled.')
            self._end_locked(rec, phase, error)

    def _end_locked(self, rec, phase, error):
        self._move(rec, phase, error)
        self._clear_pieces()
        self._touch(rec)
        self._drop_data()

    def _move(self, rec, phase, error=None):
        """Change the phase, unless the session ended: an end is final."""
        if rec.ended and phase != rec.phase:
            return
        if rec.move_to(phase, self.storage.clock(), error):
            records.log_change(LOG, rec, self._request_id())

    def _request_id(self):
        return getattr(self.caller, 'request_id', None)

    def _sync_data(self):
        with self._open_data() as data:
            data.sync()

    def _recover(self):
        """What dead workers left, made good; under the record lock.

        Reads the record afresh into :attr:`record`; puts a ``finalizing``
        session whose finalizer died back to ``paused_system``; then what
        killed writers left (:meth:`_recover_writers`).
        """
        rec = self.record = self._read_record()
        if rec.phase == records.FINALIZING and not self.finalizer:
            if self._finalizer_gone():
                self._move(rec, records.PAUSED_SYSTEM,
                           'A finalize was interrupted; finalize again, or '
                           'send any range again, to finish the upload.')
                self._touch(rec)
        self._recover_writers(rec)

    def _touch(self, rec):
        now = self.storage.clock()
        rec.updated_at = now
        if not rec.ended:
            rec.expires_at = self.storage.limits.expiry(rec.created_at, now)
        self._write_record(rec)
        self.record = rec


#: The byte of a session's lock file its record lock takes, and the one the
#: request finalizing it holds (its bytes ``1 + a`` to ``1 + b`` are the
#: writers' of image bytes ``a`` to ``b``).
RECORD_LOCK = (0, 1)
FINALIZE_LOCK = (1 << 62, 1)


class NodeLocks:
    """The locks of a session kept in a lock file (``lock_fd``): record,
    writers' bytes and finalize, held by the kernel for as long as the
    request's descriptor is open, so a killed worker holds none
    (:mod:`~sizeaware.sessions.locks`). The spool's sessions and, within
    one node, the S3 ones use them."""

    lock_fd = None

    def writing(self):
        return locks.held_by_another(self.lock_fd, 1, max(self.record.size,
                                                          1))

    def finalizing_elsewhere(self):
        return (not self.finalizer
                and locks.held_by_another(self.lock_fd, *FINALIZE_LOCK))

    def _take_finalize(self):
        # Held until this request ends, also when its worker dies.
        return locks.try_acquire(self.lock_fd, *FINALIZE_LOCK)

    def _release_finalize(self):
        locks.release(self.lock_fd, *FINALIZE_LOCK)

    def _finalizer_gone(self):
        if locks.try_acquire(self.lock_fd, *FINALIZE_LOCK):
            locks.release(self.lock_fd, *FINALIZE_LOCK)
            return True
        return False


def found(storage, attempts, caller, ended):
    """The first session ``attempts`` open (each a callable that opens one
    or raises SessionNotFound), if ``caller`` owns it; an expired one is
    ended on sight (unless a request still writes); an ended one only if
    ``ended``.

    :raises sizeaware.exceptions.SessionNotFound: someone else's.
    """
    for attempt in attempts:
        try:
            session = attempt()
        except exceptions.SessionNotFound:
            continue
        session = _owned(session, caller)
        if not session.record.ended and (
                session.record.expires_at <= storage.clock()):
            reaper.expire(session, storage.clock())
        if session.record.ended and not ended:
            session.close()
            return None
        return session
    return None


def _complete(held, size):
    return ranges.is_complete(held, size) or (size == 0 and not held)


def _owned(session, caller):
    """``session`` if ``caller`` owns it (or None if there is none).

    :raises sizeaware.exceptions.SessionNotFound: someone else's.
    """
    if session is None or session.record.owned_by(caller):
        return session
    session.close()
    raise exceptions.SessionNotFound('No upload session for this image.')


def phase_conflict(rec):
    """The UploadConflict for a write or finalize the phase forbids."""
    if rec.phase == records.PAUSED_USER:
        return exceptions.UploadConflict(
            'The upload session of this image is paused; resume it '
            '(POST .../session/resume) to send bytes.')
    if rec.phase == records.FINISHED_FAILURE:
        return exceptions.UploadConflict(
            'The upload session of this image failed (%s); start a new '
            'upload.' % rec.error)
    return exceptions.UploadConflict(
        'The upload session of this image is %s and takes no more bytes.'
        % rec.phase)
