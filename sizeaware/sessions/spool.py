"""The spool: one directory per transfer session, written at offsets.

Layout of ``<spool_dir>/<image_id>.<target>/``:

``record.json``
    the :class:`~sizeaware.sessions.record.Record`;
``data``
    the image's bytes, each written at its own offset (``os.pwrite``), so
    ranges arrive in any order and in parallel;
``part.0``, ``part.1``, ...
    instead of ``data``, for a tus final upload that joins partial uploads
    (concatenation): hard links to the partial uploads' ``data`` files, so
    joining copies nothing; :meth:`Session.reader` reads them in order;
``ranges.json``
    the ranges held, rewritten atomically only after the bytes it adds were
    synced (``fsync`` of ``data``, then of this file, then of the record),
    so it never claims a byte that is not on disk; a crash at any moment
    loses at most bytes not yet claimed, never claims lost ones;
``lock``
    the session's locks (:mod:`~sizeaware.sessions.locks`): byte 0 guards
    the record and the ranges file for the moment they are read or
    rewritten; bytes ``1 + a`` to ``1 + b`` are held by the request writing
    image bytes ``a`` to ``b``, so two requests never write the same bytes
    at once, on any process sharing the directory; byte ``2**62`` is held
    by the request finalizing the session, so a ``finalizing`` session
    whose byte is free was left by a worker that died, and goes back to
    ``transferring`` with every byte it holds (sending any range again
    finalizes it);
``journal.<uuid>``
    one per request writing bytes, locked by it: where its bytes began
    since its last claim, then the end and CRC-32C of each piece written
    since (computed in hardware: the journal costs a writer next to
    nothing). A worker killed mid-write claims nothing more, but the next
    request finds its journal unlocked and claims the pieces the data file
    holds (each checked against its CRC, after an ``fsync``), so the
    session keeps every byte that reached the spool and never claims one
    that is not on disk.

Writes go through the stream base: :class:`SpoolWriter` is a
:class:`~sizeaware.stream.BodyStream` whose hook writes each piece at its
offset, and :meth:`Session.reader` reads the spool back through the same
base. A spool-wide ``.lock`` serialises creating sessions (so the limits
hold across processes) and the reaper.

A tus partial upload (concatenation) is a session of its own, in
``<image_id>.<target>.<upload_id>/``, beside the image's one session.
"""

import contextlib
import functools
import json
import os
import random
import re
import shutil
import struct
import time
import uuid

import crc32c

from sizeaware import exceptions
from sizeaware import stream
from sizeaware.sessions import locks
from sizeaware.sessions import ranges
from sizeaware.sessions import record as records

#: Image ids are UUIDs; anything else names no image (and no directory).
_IMAGE_ID = re.compile(r'[A-Za-z0-9_-]{1,64}')
#: The random name of a tus upload (``secrets.token_hex(16)``).
_UPLOAD_ID = re.compile(r'[0-9a-f]{32}')
#: A long write is made durable and claimed every this many bytes, so a
#: killed worker loses at most this much of what it had received.
CHECKPOINT_BYTES = 16 * 1024 * 1024
#: How much of the spool is read at a time at finalize, whatever Glance's
#: reads: a piece costs a turn of every format inspector, so 1 MiB pieces
#: cost a sixteenth of 64 KiB ones per GiB. (A request body is read in the
#: stream base's smaller pieces: a read being filled when the connection
#: breaks is lost, and a slow client's would take long to fill.)
PIECE_BYTES = 1024 * 1024
#: The reaper sweeps at most once per this many seconds (all processes),
#: examines at most this many entries and removes at most this many.
REAP_INTERVAL = 60
REAP_EXAMINE = 256
REAP_REMOVE = 16
_RECORD_LOCK = (0, 1)
_FINALIZE_LOCK = (1 << 62, 1)
_JOURNAL_PREFIX = 'journal.'
# A journal: the absolute offset its entries start from, then per piece
# the absolute end and the CRC-32C of the piece.
_JOURNAL_START = struct.Struct('<Q')
_JOURNAL_ENTRY = struct.Struct('<QI')


def _write_all(fd, data, offset):
    with memoryview(data) as view:
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


class Live:
    """The bytes a request is still receiving, for a reader of the whole
    image (:meth:`Session.reader`) that follows them as they arrive.

    :param first: their offset in the image.
    :param body: the request's body (a :class:`SpoolWriter`, which also
        writes them to the spool), of ``end - first`` bytes.
    :param ended: called once the body has ended, before its last piece
        is handed on: claims the bytes; may raise to refuse them.

    Whatever the body or ``ended`` raised is kept in :attr:`error`: it is
    the request's, whoever read the image saw it first.
    """

    def __init__(self, first, body, ended):
        self.first = first
        self.end = first + body.expected
        self.body = body
        self.ended = ended
        self.error = None
        self.complete = False

    def read(self, size):
        try:
            # The body raises rather than end short.
            data = self.body.read(size)
            if self.body.received == self.body.expected:
                self.ended()
                self.complete = True
            return data
        except Exception as exc:
            self.error = exc
            raise


class SpoolWriter(stream.BodyStream):
    """The stream base, writing each piece of a request body into a
    session's data file at its offset.

    Bytes the session already holds are compared rather than trusted: a
    piece that differs from them raises
    :class:`~sizeaware.exceptions.UploadConflict` before it is written.
    Every :data:`CHECKPOINT_BYTES` the bytes written so far are synced and
    claimed through ``checkpoint(start, end)``.
    """

    def __init__(self, pull, expected=None, delimited=False, *, fd, start,
                 held, checkpoint=None, journal=None):
        super().__init__(pull, expected, delimited)
        self.fd = fd
        self.start = start
        self.held = held
        self._checkpoint = checkpoint
        self._claimed = 0
        self._journal = journal
        self._journal_at = _JOURNAL_START.size

    def chunk_update(self, data):
        position = self.start + self.received
        with memoryview(data) as view:
            for first, end in ranges.overlaps(self.held, position,
                                              position + len(view)):
                have = os.pread(self.fd, end - first, first)
                if have != view[first - position:end - position]:
                    raise exceptions.UploadConflict(
                        'Bytes %d-%d differ from the bytes already received '
                        'for this image.' % (first, end - 1))
            _write_all(self.fd, view, position)
            if self._journal is not None:
                _write_all(self._journal, _JOURNAL_ENTRY.pack(
                    position + len(view), crc32c.crc32c(view)),
                    self._journal_at)
                self._journal_at += _JOURNAL_ENTRY.size
        written = self.received + len(data)
        if (self._checkpoint is not None
                and written - self._claimed >= CHECKPOINT_BYTES):
            os.fsync(self.fd)
            self._checkpoint(self.start + self._claimed, self.start + written)
            self._claimed = written
            if self._journal is not None:
                _reset_journal(self._journal, self.start + written)
                self._journal_at = _JOURNAL_START.size



class Limits:
    """What the spool may hold; see the options of the same names."""

    def __init__(self, max_sessions_per_project=10,
                 max_bytes=100 * 1024 ** 3, inactivity_timeout=86400,
                 max_age=7 * 86400):
        self.max_sessions_per_project = max_sessions_per_project
        self.max_bytes = max_bytes
        self.inactivity_timeout = inactivity_timeout
        self.max_age = max_age

    def expiry(self, created_at, now):
        return min(now + self.inactivity_timeout, created_at + self.max_age)


class Spool:
    """The spool directory and the sessions in it.

    :param directory: created (mode 0700) if missing.
    :param clock: ``time.time`` in production; tests move time on.
    """

    def __init__(self, directory, limits=None, clock=time.time):
        self.directory = os.path.abspath(directory)
        self.limits = limits or Limits()
        self.clock = clock

    # -- sessions ---------------------------------------------------------

    def session(self, image_id, target, owner, part=None):
        """The live session of this image and target, or None.

        An expired session is removed on sight and reported as None.

        :param owner: ``(project_id, user_id)`` of the caller.
        :param part: the upload id of a tus partial upload of the image,
            whose session is its own.
        :raises sizeaware.exceptions.SessionNotFound: the session is
            someone else's: to them it does not exist, whatever they ask
            of it, and it is left as it is.
        """
        session = self._live(image_id, target, part)
        return _owned(session, owner)

    def _live(self, image_id, target, part=None):
        path = self._path(image_id, target, part)
        try:
            session = Session(self, path)
        except exceptions.SessionNotFound:
            return None
        if session.record.expires_at <= self.clock():
            session.remove(only_if_idle=True)
            session.close()
            return None
        return session

    def create(self, image_id, target, owner, size, sha256=None, *,
               part=None, reserved=False, **fields):
        """The session of this image and target, created if there is none
        (two first requests racing get the same one).

        :param part: see :meth:`session`.
        :param reserved: the session's bytes are reserved already, by
            sessions it replaces (a tus final upload takes the bytes of its
            partial uploads, removed once joined): the limits are not
            checked again.
        :param fields: more :class:`~sizeaware.sessions.record.Record`
            fields of a new session.
        :raises sizeaware.exceptions.SessionNotFound: the one there is
            belongs to someone else.
        :raises sizeaware.exceptions.TooManySessions:
        :raises sizeaware.exceptions.SpoolFull:
        """
        path = self._path(image_id, target, part)
        with self._spool_locked():
            existing = self._live(image_id, target, part)
            if existing is not None:
                return _owned(existing, owner)
            if not reserved:
                self._check_limits(owner[0], size)
            now = self.clock()
            rec = records.Record(
                image_id=image_id, target=target, project_id=owner[0],
                user_id=owner[1], size=size, created_at=now,
                updated_at=now, expires_at=self.limits.expiry(now, now),
                sha256=sha256, **fields)
            tmp = os.path.join(self.directory, '.new.%s' % uuid.uuid4().hex)
            os.mkdir(tmp, 0o700)
            for name in ('data', 'lock'):
                os.close(os.open(os.path.join(tmp, name),
                                 os.O_WRONLY | os.O_CREAT, 0o600))
            records.write_atomically(os.path.join(tmp, 'ranges.json'), '[]')
            records.write_atomically(os.path.join(tmp, 'record.json'),
                                     rec.to_json())
            shutil.rmtree(path, ignore_errors=True)
            os.rename(tmp, path)
            records.fsync_dir(self.directory)
        return Session(self, path)

    def records(self, limit=None):
        """``(path, record)`` of every session, unreadable ones skipped."""
        try:
            names = [n for n in os.listdir(self.directory)
                     if not n.startswith('.')]
        except FileNotFoundError:
            return
        if limit is not None and len(names) > limit:
            start = random.randrange(len(names))
            names = (names[start:] + names[:start])[:limit]
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                with open(os.path.join(path, 'record.json')) as f:
                    yield path, records.Record.from_json(f.read())
            except (OSError, ValueError, TypeError):
                continue

    # -- the reaper ---------------------------------------------------------

    def reap(self, force=False):
        """Remove expired sessions and leftovers, at most once per
        :data:`REAP_INTERVAL` across processes, and a bounded amount of
        work each time, so any request can afford to trigger it.

        :returns: how many sessions were removed.
        """
        stamp = os.path.join(self.directory, '.reaped')
        now = self.clock()
        try:
            if not force and os.stat(stamp).st_mtime > now - REAP_INTERVAL:
                return 0
        except FileNotFoundError:
            pass
        try:
            with open(stamp, 'a'):
                pass
            os.utime(stamp, (now, now))
        except OSError:
            return 0
        removed = 0
        for name in os.listdir(self.directory)[:REAP_EXAMINE]:
            if name.startswith('.dead.') or (
                    name.startswith('.new.') and os.stat(os.path.join(
                        self.directory, name)).st_mtime < now - 3600):
                shutil.rmtree(os.path.join(self.directory, name),
                              ignore_errors=True)
        for path, rec in self.records(limit=REAP_EXAMINE):
            if removed >= REAP_REMOVE:
                break
            if rec.expires_at > now:
                continue
            try:
                session = Session(self, path)
            except exceptions.SessionNotFound:
                continue
            try:
                removed += session.remove(only_if_idle=True)
            finally:
                session.close()
        return removed

    # -- internals ----------------------------------------------------------

    def _path(self, image_id, target, part=None):
        if not _IMAGE_ID.fullmatch(image_id) or target not in ('file',
                                                                'stage'):
            raise exceptions.ImageNotFound('No image with id %s.' % (
                ascii(image_id[:64]),))
        name = '%s.%s' % (image_id, target)
        if part is not None:
            if not _UPLOAD_ID.fullmatch(part):
                raise exceptions.SessionNotFound('No such upload.')
            name += '.' + part
        return os.path.join(self.directory, name)

    @contextlib.contextmanager
    def _spool_locked(self):
        try:
            os.makedirs(self.directory, 0o700, exist_ok=True)
            fd = os.open(os.path.join(self.directory, '.lock'),
                         os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise exceptions.SpoolUnavailable(
                'Resumable uploads are unavailable: the spool directory '
                'cannot be used (%s).' % exc.strerror) from exc
        try:
            locks.acquire(fd, *_RECORD_LOCK)
            yield
        finally:
            os.close(fd)

    def _check_limits(self, project_id, size):
        now = self.clock()
        live = [rec for _, rec in self.records()
                if rec.phase in records.LIVE_PHASES and rec.expires_at > now]
        mine = sum(1 for rec in live if rec.project_id == project_id)
        if mine >= self.limits.max_sessions_per_project:
            raise exceptions.TooManySessions(
                'This project already has %d resumable uploads in progress, '
                'the most it may have; finish or cancel one first.' % mine)
        reserved = sum(rec.size for rec in live)
        if reserved + size > self.limits.max_bytes:
            raise exceptions.SpoolFull(
                'The upload spool cannot hold another %d bytes: %d of its '
                '%d bytes are reserved by uploads in progress.'
                % (size, reserved, self.limits.max_bytes))
        stat = os.statvfs(self.directory)
        if stat.f_bavail * stat.f_frsize < size:
            raise exceptions.SpoolFull(
                'The upload spool cannot hold another %d bytes: its disk '
                'has %d bytes free.' % (size, stat.f_bavail * stat.f_frsize))


class Session:
    """One session on disk, opened for the length of one request.

    :raises sizeaware.exceptions.SessionNotFound: when there is none.
    """

    def __init__(self, spool, path):
        self.spool = spool
        self.path = path
        #: Whether this request holds the finalize lock.
        self.finalizer = False
        try:
            self.lock_fd = os.open(os.path.join(path, 'lock'), os.O_RDWR)
        except FileNotFoundError:
            raise exceptions.SessionNotFound(
                'No upload session for this image.') from None
        try:
            self.record = self._read_record()
        except Exception:
            self.close()
            raise

    def close(self):
        """Release every lock this request holds."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        self.finalizer = False

    # -- reading ------------------------------------------------------------

    def held(self):
        """The ranges held, as claimed by the ranges file."""
        with open(os.path.join(self.path, 'ranges.json')) as f:
            return [tuple(r) for r in json.load(f)]

    def writing(self):
        """Whether another request is writing bytes of this session now."""
        return locks.held_by_another(self.lock_fd, 1, self.record.size)

    def status(self):
        """The status document (see the resumable filter's docstring)."""
        with self._locked():
            self._recover()
            rec = self.record
            held = self.held()
        phase = rec.phase
        if phase == records.TRANSFERRING and not self.writing():
            phase = records.PAUSED
        return {
            'image_id': rec.image_id, 'target': rec.target,
            'phase': phase, 'size': rec.size,
            'bytes_held': ranges.total(held),
            'ranges_held': [[s, e - 1] for s, e in held],
            'created_at': _iso(rec.created_at),
            'expires_at': _iso(rec.expires_at),
            'error': rec.error, 'sha256': rec.sha256,
        }

    def reader(self, stream_class=stream.BodyStream, live=None):
        """The whole image read back through the stream base: ``data``,
        or a final upload's ``part.<n>`` files one after the other.

        :param live: a :class:`Live`: its bytes come from the request
            still writing them (which writes them to ``data`` too), not
            from ``data``.
        :returns: a stream of :attr:`Record.size` bytes that owns its files.
        """
        sizes = self.record.parts
        names = (['data'] if sizes is None
                 else ['part.%d' % n for n in range(len(sizes))])
        sizes = [self.record.size] if sizes is None else list(sizes)
        if live is not None and len(names) != 1:
            raise ValueError('a joined upload has no live bytes')
        fds = []
        try:
            for name in names:
                fds.append(os.open(os.path.join(self.path, name),
                                   os.O_RDONLY))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        index, position = 0, 0

        def pull(hint):
            nonlocal index, position
            if live is not None and live.first <= position < live.end:
                data = live.read(min(hint, live.end - position))
                position += len(data)
                return data
            while index < len(fds):
                limit = sizes[index] - position
                if live is not None and position < live.first:
                    limit = live.first - position
                data = os.pread(fds[index], min(hint, limit), position)
                if data:
                    position += len(data)
                    return data
                index, position = index + 1, 0
            return b''

        reader = stream_class(pull, self.record.size, delimited=True)
        close = reader.close

        def close_all():
            close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        reader.close = close_all
        return reader

    # -- writing ------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, first, last, stream_class=None, checkpoints=True):
        """Hold bytes ``first`` to ``last`` for this request and yield a
        ``stream_class`` for :func:`sizeaware.framing.open_body` writing
        them.

        :param stream_class: :class:`SpoolWriter` (the default) or a
            subclass.
        :param checkpoints: claim what was written every
            :data:`CHECKPOINT_BYTES`, and keep a journal for the next
            request to claim from should this worker die; without, nothing
            is claimed before the request commits (a body with a checksum
            to verify first).
        :raises sizeaware.exceptions.UploadConflict: while another request
            writes any of these bytes.
        """
        if not locks.try_acquire(self.lock_fd, 1 + first, last - first + 1):
            raise exceptions.UploadConflict(
                'Another request is writing some of bytes %d-%d of this '
                'image; retry once it has ended.' % (first, last))
        fd = journal = None
        name = uuid.uuid4().hex
        journal_path = os.path.join(self.path, '.new-journal.' + name)
        try:
            fd = os.open(os.path.join(self.path, 'data'), os.O_RDWR)
            if checkpoints:
                # Named for others to recover only once it is locked.
                journal = os.open(journal_path, os.O_RDWR | os.O_CREAT,
                                  0o600)
                locks.acquire(journal, 0, 0)
                _reset_journal(journal, first)
                named = os.path.join(self.path, _JOURNAL_PREFIX + name)
                os.rename(journal_path, named)
                journal_path = named
            with self._locked():
                self._recover()
                held = self.held()
            yield functools.partial(
                stream_class or SpoolWriter, fd=fd, start=first, held=held,
                journal=journal,
                checkpoint=functools.partial(self.commit, final=False,
                                             synced=True)
                if checkpoints else None)
        finally:
            if journal is not None:
                # Whatever this request claims it has claimed by now.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(journal_path)
                os.close(journal)
            if fd is not None:
                os.close(fd)
            locks.release(self.lock_fd, 1 + first, last - first + 1)

    def commit(self, start, end, final=True, synced=False):
        """Claim bytes ``start`` to ``end`` (exclusive) as held, after
        syncing them, and extend the session.

        :param final: the request's last claim: a session that is then
            complete moves to ``finalizing`` (once, whoever completes it).
        :returns: ``(held, now_finalizing)``.
        """
        if not synced:
            try:
                fd = os.open(os.path.join(self.path, 'data'), os.O_RDWR)
            except FileNotFoundError:
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.') from None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with self._locked():
            self._recover()
            rec = self.record
            if rec.phase != records.TRANSFERRING:
                held = self.held()
                if ranges.covers(held, start, end):
                    # Claimed already (at a checkpoint) before another
                    # request completed the image: kept, not a conflict.
                    return held, False
                raise _phase_conflict(rec)
            held = ranges.add(self.held(), start, end)
            records.write_atomically(os.path.join(self.path, 'ranges.json'),
                                     json.dumps(held))
            finalizing = final and ranges.is_complete(held, rec.size)
            if finalizing:
                # Held until this request ends, also when its worker dies.
                if not locks.try_acquire(self.lock_fd, *_FINALIZE_LOCK):
                    raise _phase_conflict(records.Record(
                        **dict(vars(rec), phase=records.FINALIZING)))
                self.finalizer = True
                rec.phase = records.FINALIZING
                rec.error = None
            self._touch(rec)
            return held, finalizing

    def wait_idle(self, timeout, interval=0.05):
        """Wait until no request writes bytes of this session (one whose
        client went away may still be claiming what arrived), at most
        ``timeout`` seconds.

        :returns: whether it is idle.
        """
        deadline = time.monotonic() + timeout
        while self.writing():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    def join(self, partials):
        """Make the bytes of ``partials`` (complete sessions of their
        own, in order) this session's, without copying them: each one's
        ``data`` is hard-linked here as ``part.<n>``.

        The partials are left as they are; remove them afterwards.

        :returns: ``(held, now_finalizing)``, as :meth:`commit`.
        """
        for number, partial in enumerate(partials):
            os.link(os.path.join(partial.path, 'data'),
                    os.path.join(self.path, 'part.%d' % number))
        records.fsync_dir(self.path)
        with self._locked():
            rec = self._read_record()
            rec.parts = [partial.record.size for partial in partials]
            self._touch(rec)
        return self.commit(0, self.record.size, synced=True)

    def check_writable(self):
        """:raises UploadConflict: unless bytes may be written now."""
        if self.record.phase == records.FINALIZING:
            with self._locked():
                self._recover()
        if self.record.phase != records.TRANSFERRING:
            raise _phase_conflict(self.record)

    def touch(self):
        """Extend the session, as every request does."""
        with self._locked():
            self._touch(self._read_record())

    def set_phase(self, phase, error=None):
        with self._locked():
            rec = self._read_record()
            rec.phase, rec.error = phase, error
            self._touch(rec)

    def fail(self, reason):
        """Phase ``failed`` with ``reason``; the data is dropped, the record
        stays (for the status document) until the session expires.

        The ranges file is emptied before the data goes, so neither the
        status document nor a tus ``HEAD`` ever counts a byte that is no
        longer on disk.
        """
        with self._locked():
            rec = self._read_record()
            rec.phase, rec.error = records.FAILED, reason
            records.write_atomically(os.path.join(self.path, 'ranges.json'),
                                     '[]')
            self._touch(rec)
        with contextlib.suppress(FileNotFoundError):
            os.truncate(os.path.join(self.path, 'data'), 0)
        # A final upload's parts, links its partials no longer share
        # (they are removed once joined).
        for number in range(len(self.record.parts or ())):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, 'part.%d' % number))

    def remove(self, only_if_idle=False):
        """Delete the session and its spool.

        :param only_if_idle: leave it alone while a request writes to it.
        :returns: 1 if removed, else 0.
        """
        locked = locks.try_acquire(self.lock_fd, *_RECORD_LOCK)
        if not locked and only_if_idle:
            return 0
        if not locked:
            locks.acquire(self.lock_fd, *_RECORD_LOCK)
        try:
            if only_if_idle and self.writing():
                return 0
            if not self._still_ours():
                return 0
            dead = os.path.join(self.spool.directory,
                                '.dead.%s' % uuid.uuid4().hex)
            os.rename(self.path, dead)
            records.fsync_dir(self.spool.directory)
        finally:
            locks.release(self.lock_fd, *_RECORD_LOCK)
        shutil.rmtree(dead, ignore_errors=True)
        return 1

    # -- internals ----------------------------------------------------------

    def _recover(self):
        """What dead workers left, made good; under the record lock.

        Reads the record afresh into :attr:`record`. Claims the pieces that
        the journals of killed writers list and the data file holds; puts a
        ``finalizing`` session whose finalizer died back to
        ``transferring``.
        """
        rec = self.record = self._read_record()
        if rec.phase == records.FINALIZING and not self.finalizer:
            if locks.try_acquire(self.lock_fd, *_FINALIZE_LOCK):
                locks.release(self.lock_fd, *_FINALIZE_LOCK)
                rec.phase = records.TRANSFERRING
                rec.error = ('A finalize was interrupted; sending any range '
                             'again finishes the upload.')
                self._touch(rec)
        for name in os.listdir(self.path):
            if name.startswith(_JOURNAL_PREFIX):
                self._recover_journal(os.path.join(self.path, name))

    def _recover_journal(self, path):
        try:
            journal = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            if not locks.try_acquire(journal, 0, 0):
                return  # its writer is alive
            content = os.pread(journal, 1 << 24, 0)
            if (self.record.phase == records.TRANSFERRING
                    and len(content) >= _JOURNAL_START.size):
                start = end = _JOURNAL_START.unpack_from(content)[0]
                data = os.open(os.path.join(self.path, 'data'), os.O_RDWR)
                try:
                    for offset in range(
                            _JOURNAL_START.size,
                            len(content) - _JOURNAL_ENTRY.size + 1,
                            _JOURNAL_ENTRY.size):
                        piece_end, crc = _JOURNAL_ENTRY.unpack_from(
                            content, offset)
                        if not end < piece_end <= self.record.size or (
                                crc32c.crc32c(os.pread(
                                    data, piece_end - end, end)) != crc):
                            break
                        end = piece_end
                    if end > start:
                        os.fsync(data)
                finally:
                    os.close(data)
                if end > start:
                    records.write_atomically(
                        os.path.join(self.path, 'ranges.json'),
                        json.dumps(ranges.add(self.held(), start, end)))
            os.unlink(path)
        finally:
            os.close(journal)

    def _read_record(self):
        try:
            with open(os.path.join(self.path, 'record.json')) as f:
                return records.Record.from_json(f.read())
        except FileNotFoundError:
            raise exceptions.SessionNotFound(
                'No upload session for this image.') from None

    def _touch(self, rec):
        now = self.spool.clock()
        rec.updated_at = now
        rec.expires_at = self.spool.limits.expiry(rec.created_at, now)
        records.write_atomically(os.path.join(self.path, 'record.json'),
                                 rec.to_json())
        self.record = rec

    def _still_ours(self):
        """Whether the directory is still the one this request opened (not
        removed, nor replaced by a new session)."""
        try:
            return os.stat(os.path.join(self.path, 'lock')).st_ino == (
                os.fstat(self.lock_fd).st_ino)
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _locked(self):
        locks.acquire(self.lock_fd, *_RECORD_LOCK)
        try:
            if not self._still_ours():
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.')
            yield
        finally:
            locks.release(self.lock_fd, *_RECORD_LOCK)


def _reset_journal(fd, start):
    """Empty a journal: its pieces are claimed; the next begin at
    ``start``."""
    os.ftruncate(fd, 0)
    _write_all(fd, _JOURNAL_START.pack(start), 0)


def _owned(session, owner):
    """``session`` if ``owner`` owns it (or None if there is none).

    :raises sizeaware.exceptions.SessionNotFound: someone else's.
    """
    if session is None or session.record.owned_by(owner):
        return session
    session.close()
    raise exceptions.SessionNotFound('No upload session for this image.')


def _phase_conflict(rec):
    if rec.phase == records.FAILED:
        return exceptions.UploadConflict(
            'The upload session of this image failed (%s); DELETE it to '
            'start again.' % rec.error)
    return exceptions.UploadConflict(
        'The upload session of this image is %s and takes no more bytes.'
        % rec.phase)


def _iso(timestamp):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(timestamp))
