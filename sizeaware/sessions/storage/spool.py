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
    joining copies nothing; :meth:`SpoolSession.reader` reads them in
    order;
``pieces``
    the claims, each with its CRC-32C (:mod:`~sizeaware.sessions.journal`),
    appended only after the bytes they claim were synced; the ranges held
    are their union;
``lock``
    the session's locks (:mod:`~sizeaware.sessions.locks`): byte 0 guards
    the record and the pieces for the moment they are read or written;
    bytes ``1 + a`` to ``1 + b`` are held by the request writing image
    bytes ``a`` to ``b``, so two requests never write the same bytes at
    once, on any process sharing the directory; byte ``2**62`` is held by
    the request finalizing the session, so a ``finalizing`` session whose
    byte is free was left by a worker that died, and goes back to
    ``paused_system`` with every byte it holds;
``journal.<uuid>``
    one per request writing bytes (:class:`~sizeaware.sessions.journal.
    Journal`), claimed by the next request should its worker die.

A session that ended keeps its directory with ``record.json`` alone until
its retention time has passed. A tus partial upload (concatenation) is a
session of its own, in ``<image_id>.<target>.<upload_id>/``. A spool-wide
``.lock`` serialises creating sessions (so the limits hold across
processes) and the reaper's sweep of leftovers.
"""

import contextlib
import functools
import json
import os
import random
import re
import shutil
import time
import uuid

import crc32c
from oslo_log import log as logging

from sizeaware import exceptions
from sizeaware import stream
from sizeaware.sessions import journal as journals
from sizeaware.sessions import limits as limits_mod
from sizeaware.sessions import locks
from sizeaware.sessions import record as records
from sizeaware.sessions import storage
from sizeaware.sessions.storage import blocks
from sizeaware.sessions.storage import ledger
from sizeaware.sessions.storage import spool_writer

LOG = logging.getLogger(__name__)

#: Image ids are UUIDs; anything else names no image (and no directory).
_IMAGE_ID = re.compile(r'[A-Za-z0-9_-]{1,64}')
#: The random name of a tus upload (``secrets.token_hex(16)``).
_UPLOAD_ID = re.compile(r'[0-9a-f]{32}')
_RECORD_LOCK = ledger.RECORD_LOCK


class Spool(storage.Storage):
    """The spool directory and the sessions in it.

    :param directory: created (mode 0700) if missing.
    :param clock: ``time.time`` in production; tests move time on.
    """

    def __init__(self, directory, limits=None, clock=time.time):
        self.directory = os.path.abspath(directory)
        self.limits = limits or limits_mod.Limits()
        self.clock = clock

    def session(self, image_id, target, caller, part=None, ended=False):
        path = self._path(image_id, target, part)
        return ledger.found(self, [functools.partial(
            SpoolSession, self, path, caller)], caller, ended)

    def open(self, key, caller):
        return SpoolSession(self, key, caller)

    def create(self, image_id, target, caller, size, sha256=None, *,
               part=None, reserved=False, gone=None, backend=None,
               **fields):
        """See :meth:`~sizeaware.sessions.storage.Storage.create`; the
        spool takes every store (``backend`` is not its concern)."""
        with self.creating():
            existing = self.session(image_id, target, caller, part)
            if existing is not None:
                return existing
            return self.create_locked(image_id, target, caller, size, sha256,
                                      part=part, reserved=reserved,
                                      gone=gone, **fields)

    def creating(self):
        """The spool-wide lock a creation holds, so the limits hold across
        processes."""
        return self._spool_locked()

    def create_locked(self, image_id, target, caller, size, sha256=None, *,
                      part=None, reserved=False, gone=None, others=(),
                      **fields):
        """:meth:`create`, under :meth:`creating`, once no session was
        found.

        :param others: records of sessions kept elsewhere (store-native
            ones), counted against the project's limit.
        """
        path = self._path(image_id, target, part)
        now = self.clock()
        if not reserved:
            limits_mod.check(
                self.limits, [rec for _, rec in self.records()]
                + list(others), caller[0], size, now, self.directory,
                gone or (lambda rec: False))
        rec = records.new(image_id, target, caller, size, now,
                          self.limits.expiry(now, now), sha256=sha256,
                          **fields)
        self._make(path, rec)
        session = SpoolSession(self, path, caller)
        records.log_change(LOG, session.record,
                           getattr(caller, 'request_id', None))
        return session

    def _make(self, path, rec):
        """Put a new session's directory in place, under the spool lock."""
        tmp = os.path.join(self.directory, '.new.%s' % uuid.uuid4().hex)
        os.mkdir(tmp, 0o700)
        for name in ('lock', journals.PIECES, 'data'):
            os.close(os.open(os.path.join(tmp, name),
                             os.O_WRONLY | os.O_CREAT, 0o600))
        records.write_atomically(os.path.join(tmp, 'record.json'),
                                 rec.to_json())
        if os.path.exists(path):
            # An ended session's record, or a crashed one's leftovers.
            os.rename(path, self._dead_path())
        os.rename(tmp, path)
        records.fsync_dir(self.directory)

    def records(self, limit=None):
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

    def claim_sweep(self, interval, now):
        stamp = os.path.join(self.directory, '.reaped')
        try:
            if os.stat(stamp).st_mtime > now - interval:
                return False
        except FileNotFoundError:
            pass
        try:
            # A node whose spool holds nothing yet still sweeps (the
            # sessions kept in a store's cluster or bucket).
            os.makedirs(self.directory, 0o700, exist_ok=True)
            with open(stamp, 'a'):
                pass
            os.utime(stamp, (now, now))
        except OSError:
            return False
        return True

    def sweep_leftovers(self, now):
        # Under the spool lock: a creation renames its ``.new.`` entry
        # while holding it.
        with self._spool_locked():
            for name in os.listdir(self.directory)[:256]:
                path = os.path.join(self.directory, name)
                try:
                    stale = name.startswith('.dead.') or (
                        name.startswith('.new.')
                        and os.stat(path).st_mtime < now - 3600)
                except FileNotFoundError:
                    continue
                if stale:
                    shutil.rmtree(path, ignore_errors=True)

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

    def _dead_path(self):
        return os.path.join(self.directory, '.dead.%s' % uuid.uuid4().hex)

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


class SpoolSession(ledger.NodeLocks, ledger.LedgerSession):
    """One session on disk, opened for the length of one request.

    :raises sizeaware.exceptions.SessionNotFound: when there is none.
    """

    def __init__(self, spool, path, caller=None):
        self.storage = spool
        self.path = path
        self.caller = caller
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
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        self.finalizer = False

    # -- reading ------------------------------------------------------------

    def pieces(self):
        return journals.read_pieces(os.path.join(self.path,
                                                 journals.PIECES))

    def reader(self, stream_class=stream.BodyStream, live=None):
        sizes = self.record.parts
        if live is not None and sizes is not None:
            raise ValueError('a joined upload has no live bytes')
        fds = []
        try:
            if sizes is None:
                fds.append(self._open_data(writable=False))
            else:
                for n in range(len(sizes)):
                    fds.append(blocks.LocalFile(
                        os.path.join(self.path, 'part.%d' % n),
                        writable=False))
        except BaseException as exc:
            for fd in fds:
                fd.close()
            if isinstance(exc, FileNotFoundError):
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.') from None
            raise
        sizes = [self.record.size] if sizes is None else list(sizes)
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
                data = fds[index].pread(min(hint, limit), position)
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
                with contextlib.suppress(Exception):
                    fd.close()
        reader.close = close_all
        return reader

    # -- writing ------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, first, last, checkpoints=True, limit=None,
               digest=None):
        """Hold bytes ``first`` to ``last`` for this request and yield a
        :class:`~sizeaware.sessions.storage.spool_writer.SpoolWriter` class
        for :func:`sizeaware.framing.open_body`
        writing them.

        :param limit: see :class:`~sizeaware.sessions.storage.Writer`.
        :param digest: see :class:`~sizeaware.sessions.storage.Writer`.
        :param checkpoints: claim what was written every
            :data:`~sizeaware.sessions.storage.spool_writer.CHECKPOINT_BYTES`,
            and keep a journal for the next
            request to claim from should this worker die; without, nothing
            is claimed before the request commits (a body with a digest to
            verify first).
        :raises sizeaware.exceptions.UploadConflict: while another request
            writes any of these bytes.
        """
        if not locks.try_acquire(self.lock_fd, 1 + first, last - first + 1):
            raise exceptions.UploadConflict(
                'Another request is writing some of bytes %d-%d of this '
                'image; retry once it has ended.' % (first, last))
        data = journal = None
        try:
            data = self._open_data()
            if checkpoints:
                journal = journals.Journal(self.path, uuid.uuid4().hex,
                                           first)
            with self._locked():
                self._recover()
                held = self.held()
            yield functools.partial(
                spool_writer.SpoolWriter, data=data, start=first, held=held,
                journal=journal, limit=limit, digest=digest,
                checkpoint=functools.partial(self.commit, final=False,
                                             synced=True)
                if checkpoints else None)
        finally:
            if journal is not None:
                journal.close()
            if data is not None:
                data.close()
            locks.release(self.lock_fd, 1 + first, last - first + 1)

    def join(self, partials):
        """Make the bytes of ``partials`` (complete sessions of their
        own, in order) this session's, without copying them: each one's
        ``data`` is hard-linked here as ``part.<n>``, its pieces moved to
        their place in the image.

        The partials are left as they are; remove them afterwards.

        :returns: ``(held, now_finalizing)``, as :meth:`commit`.
        :raises sizeaware.exceptions.UploadConflict: a partial upload was
            cancelled meanwhile.
        """
        pieces = []
        offset = 0
        for number, partial in enumerate(partials):
            with partial._locked():
                try:
                    os.link(os.path.join(partial.path, 'data'),
                            os.path.join(self.path, 'part.%d' % number))
                except FileNotFoundError:
                    raise exceptions.UploadConflict(
                        'A partial upload was cancelled while the final '
                        'upload joined it.') from None
                pieces += [(offset + s, offset + e, c)
                           for s, e, c in partial.pieces()]
            offset += partial.record.size
        records.fsync_dir(self.path)
        with self._locked():
            # The record names the parts before any piece claims them, so
            # a crash in between never claims bytes of an empty data file.
            rec = self._read_record()
            rec.parts = [partial.record.size for partial in partials]
            self._touch(rec)
            for start, end, crc in pieces:
                journals.append_piece(os.path.join(
                    self.path, journals.PIECES), start, end, crc)
        return self.commit(0, 0, synced=True)

    def remove(self, only_if_idle=False):
        # Under the spool's lock, as creation renames: a new session of
        # the image is never taken for this one, nor this one's rename
        # for a creation's.
        with self.storage._spool_locked():
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
                dead = self.storage._dead_path()
                os.rename(self.path, dead)
                records.fsync_dir(self.storage.directory)
            finally:
                locks.release(self.lock_fd, *_RECORD_LOCK)
        shutil.rmtree(dead, ignore_errors=True)
        return 1

    # -- internals ----------------------------------------------------------

    def _open_data(self, writable=True):
        """The image's bytes (:mod:`~sizeaware.sessions.storage.blocks`),
        ``data``.

        :raises sizeaware.exceptions.SessionNotFound: they are gone (the
            session ended).
        """
        try:
            return blocks.LocalFile(os.path.join(self.path, 'data'),
                                    writable)
        except FileNotFoundError:
            raise exceptions.SessionNotFound(
                'The upload session of this image has ended.') from None

    def _adopt_ranges_file(self):
        """A session of an earlier release names its held ranges in
        ``ranges.json``: they become pieces, their CRC-32C read from the
        data, so its client resumes where it was."""
        path = os.path.join(self.path, 'ranges.json')
        try:
            with open(path) as f:
                held = [tuple(r) for r in json.load(f)]
        except FileNotFoundError:
            return
        with open(os.path.join(self.path, 'data'), 'rb') as data:
            for start, end in held:
                data.seek(start)
                crc, position = 0, start
                while position < end:
                    piece = data.read(min(1 << 20, end - position))
                    if not piece:
                        break
                    crc = crc32c.crc32c(piece, crc)
                    position += len(piece)
                if position > start:
                    journals.append_piece(os.path.join(
                        self.path, journals.PIECES), start, position, crc)
        os.unlink(path)

    # -- the ledger's primitives (:mod:`~sizeaware.sessions.storage.ledger`)

    def _append_piece(self, start, end, crc):
        journals.append_piece(os.path.join(self.path, journals.PIECES),
                              start, end, crc)

    def _clear_pieces(self):
        journals.clear_pieces(os.path.join(self.path, journals.PIECES))

    def _recover_writers(self, rec):
        """Claim the pieces that the journals of killed writers list and
        the data holds."""
        paths = journals.journals(self.path)
        if rec.ended:
            # A writer that opened the data before the end: nothing of its
            # is claimed any more.
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        self._adopt_ranges_file()
        if not paths:
            return
        data = self._open_data()
        try:
            for path in paths:
                found = journals.recover(path, data, rec.size)
                if found is not None:
                    self._append_piece(*found)
                    LOG.info('Upload session: request_id=%s image_id=%s '
                             'claimed bytes %d-%d that a killed writer '
                             'left', self._request_id(), rec.image_id,
                             found[0], found[1] - 1)
        finally:
            data.close()

    def _drop_data(self):
        for name in os.listdir(self.path):
            if name.startswith(('part.', journals.JOURNAL_PREFIX)) or (
                    name == 'data'):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, name))

    def _write_record(self, rec):
        records.write_atomically(os.path.join(self.path, 'record.json'),
                                 rec.to_json())

    def _read_record(self):
        try:
            with open(os.path.join(self.path, 'record.json')) as f:
                return records.Record.from_json(f.read())
        except FileNotFoundError:
            raise exceptions.SessionNotFound(
                'No upload session for this image.') from None

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
