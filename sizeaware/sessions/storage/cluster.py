"""Store-native sessions kept in the RBD store's own cluster, so that any
API node continues any of them with nothing shared but Ceph.

The bytes are the RBD image the image will be
(:mod:`~sizeaware.sessions.storage.in_store`); the ledger sits beside it,
in the same pool, as RADOS objects with omap values (small, atomic,
replicated with the pool):

``sizeaware.session.<image_id>``
    one per session: ``record`` (the :class:`~sizeaware.sessions.record.
    Record`, JSON), one ``p.<start>.<end>`` key per claim (its CRC-32C),
    ``w.<cookie>`` per request writing bytes (``first last expires``) and
    ``finalizer`` (``cookie expires``) while a request finalizes;
``sizeaware.sessions``
    the index: one key per session (its record), read for the project
    limits and the reaper's sweep, so neither lists the pool.

The record lock is a RADOS class lock (``cls_lock``) on the session's
object, taken for the moment the record and the pieces are read or
changed. Unlike the spool's kernel locks, nothing in a cluster learns that
a process died, so the locks a request holds for longer are *leases*: a
writer's bytes (:data:`WRITE_LEASE`, renewed while its body flows) and the
finalize (:data:`FINALIZE_LEASE`, longer than a finalize can take). A
worker killed mid-write keeps its bytes from another request for at most
one lease; what it wrote since its last claim was never acknowledged and
is not counted (there is no writer's journal here).
"""

import contextlib
import functools
import random
import time
import uuid

from oslo_log import log as logging

from sizeaware import exceptions
from sizeaware import stream
from sizeaware.sessions import limits as limits_mod
from sizeaware.sessions import record as records
from sizeaware.sessions import storage
from sizeaware.sessions.storage import ledger
from sizeaware.sessions.storage import spool_writer

LOG = logging.getLogger(__name__)

INDEX = 'sizeaware.sessions'
_OBJECT = 'sizeaware.session.%s'
_RECORD = 'record'
_FINALIZER = 'finalizer'
#: Seconds a writer's hold on its bytes lasts unless renewed; it is renewed
#: every third of that while the body flows.
WRITE_LEASE = 15.0
#: Seconds a finalize's hold lasts: beyond any ``commit_timeout``.
FINALIZE_LEASE = 300.0
#: Seconds the record lock lasts should its holder die holding it.
_RECORD_LEASE = 10


class Clusters(storage.Storage):
    """The store-native sessions of every RBD store Glance has.

    :param in_store: the :class:`~sizeaware.sessions.storage.in_store.
        InStore` that makes, opens and removes their RBD images and reaches
        their pools.
    """

    def __init__(self, in_store, limits=None, clock=time.time):
        self.in_store = in_store
        self.limits = limits or limits_mod.Limits()
        self.clock = clock

    def session(self, image_id, target, caller, part=None, ended=False):
        if target != 'file' or part is not None:
            return None
        return ledger.found(self, [
            functools.partial(ClusterSession, self, backend, image_id,
                              caller)
            for backend in self.in_store.rbd_backends()], caller, ended)

    def open(self, key, caller):
        return ClusterSession(self, key[0], key[1], caller)

    def create(self, image_id, target, caller, size, sha256=None, *,
               part=None, reserved=False, gone=None, place=None,
               others=(), **fields):
        """A session whose bytes go to ``place`` (``(backend, url)`` from
        :meth:`~sizeaware.sessions.storage.in_store.InStore.place`).

        :param others: records of the spool's sessions, counted against
            the project's limit.
        :raises sizeaware.exceptions.UploadConflict: another node created
            a session of the image meanwhile, or the pool already holds
            an RBD image of that name.
        """
        backend, url = place
        now = self.clock()
        if not reserved:
            limits_mod.check(
                self.limits, [rec for _, rec in self.records()]
                + list(others), caller[0], size, now,
                gone=gone or (lambda rec: False), spooled=False)
        rec = records.new(image_id, target, caller, size, now,
                          self.limits.expiry(now, now), sha256=sha256,
                          store=backend, location=url, **fields)
        ioctx = self.in_store.ioctx(backend)
        rados = self.in_store.rados(backend)
        name = _OBJECT % image_id
        try:
            with rados.WriteOpCtx() as op:
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                ioctx.set_omap(op, (_RECORD,), (rec.to_json().encode(),))
                ioctx.operate_write_op(op, name)
        except rados.ObjectExists:
            # An ended session's record (its retention not passed), or
            # another node's creation a moment ago.
            existing = self.session(image_id, target, caller, ended=True)
            if existing is not None and not existing.record.ended:
                return existing
            if existing is None:
                raise exceptions.UploadConflict(
                    'Another upload session of this image exists.') from None
            existing.remove()
            return self.create(image_id, target, caller, size, sha256,
                               reserved=True, place=place, **fields)
        try:
            rec.object_id = self.in_store.create(rec)
        except BaseException:
            with contextlib.suppress(rados.ObjectNotFound):
                ioctx.remove_object(name)
            raise
        with rados.WriteOpCtx() as op:
            ioctx.set_omap(op, (_RECORD,), (rec.to_json().encode(),))
            ioctx.operate_write_op(op, name)
        _index(self.in_store, backend, rec)
        session = ClusterSession(self, backend, image_id, caller)
        records.log_change(LOG, session.record,
                           getattr(caller, 'request_id', None))
        return session

    def records(self, limit=None):
        for backend in self.in_store.rbd_backends():
            ioctx = self.in_store.ioctx(backend)
            rados = self.in_store.rados(backend)
            try:
                values = list(_omap(ioctx, rados, INDEX, '').items())
            except rados.ObjectNotFound:
                continue
            if limit is not None and len(values) > limit:
                # A sweep examines a few: from a random one on, so every
                # session's turn comes.
                start = random.randrange(len(values))
                values = (values[start:] + values[:start])[:limit]
            for image_id, value in values:
                try:
                    yield (backend, image_id), records.Record.from_json(
                        value.decode())
                except (ValueError, TypeError):
                    continue

    def claim_sweep(self, interval, now):
        # Every node sweeps the index at most once per interval, as the
        # spool sweeps for its node: a session ended twice is ended once.
        return True

    def sweep_leftovers(self, now):
        pass


class ClusterSession(ledger.LedgerSession):
    """One store-native session, opened for the length of one request.

    :raises sizeaware.exceptions.SessionNotFound: when there is none.
    """

    def __init__(self, clusters, backend, image_id, caller=None):
        self.storage = clusters
        self.backend = backend
        self.image_id = image_id
        self.caller = caller
        self.name = _OBJECT % image_id
        self.ioctx = clusters.in_store.ioctx(backend)
        self.rados = clusters.in_store.rados(backend)
        #: This request's own cookie, for its locks and leases.
        self.cookie = uuid.uuid4().hex
        #: The bytes this request's writer has open.
        self._writing = None
        self.record = self._read_record()
        self._born = self.record.created_at

    def close(self):
        if self.finalizer:
            with contextlib.suppress(exceptions.SessionNotFound):
                self._release_finalize()
            self.finalizer = False

    # -- reading ------------------------------------------------------------

    def pieces(self):
        found = []
        for key, value in _omap(self.ioctx, self.rados, self.name,
                                'p.').items():
            _, start, end = key.split('.')
            found.append((int(start), int(end), int(value)))
        return found

    def writing(self):
        now = self.storage.clock()
        return any(cookie != self.cookie and expires > now
                   for cookie, _, _, expires in self._leases())

    def finalizing_elsewhere(self):
        holder = self._finalize_holder()
        return (holder is not None and holder[0] != self.cookie
                and holder[1] > self.storage.clock())

    def reader(self, stream_class=stream.BodyStream, live=None):
        data = self._open_data(writable=False)
        position = 0

        def pull(hint):
            nonlocal position
            piece = data.pread(min(hint, self.record.size - position),
                               position)
            position += len(piece)
            return piece
        reader = stream_class(pull, self.record.size, delimited=True)
        close = reader.close

        def close_all():
            close()
            data.close()
        reader.close = close_all
        return reader

    # -- writing ------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, first, last, checkpoints=True, limit=None,
               digest=None):
        """Hold bytes ``first`` to ``last`` for this request (a lease in
        the ledger) and yield a :class:`~sizeaware.sessions.storage.
        spool_writer.SpoolWriter` class writing them into the RBD image.

        :raises sizeaware.exceptions.UploadConflict: while another request
            writes any of these bytes.
        """
        key = 'w.' + self.cookie
        with self._locked():
            now = self.storage.clock()
            for _, start, end, expires in self._leases():
                if expires > now and start <= last and first <= end:
                    raise exceptions.UploadConflict(
                        'Another request is writing some of bytes %d-%d '
                        'of this image; retry once it has ended.'
                        % (first, last))
            self._set(key, '%d %d %f' % (first, last, now + WRITE_LEASE))
            held = self.held()
        data = None
        try:
            data = self._writing = _Leased(
                self._open_data(), functools.partial(
                    self._renew, key, first, last), self.storage.clock)
            yield functools.partial(
                spool_writer.SpoolWriter, data=data, start=first, held=held,
                limit=limit, digest=digest,
                checkpoint=functools.partial(self.commit, final=False,
                                             synced=True)
                if checkpoints else None)
        finally:
            if data is not None:
                self._writing = None
                data.close()
            with contextlib.suppress(exceptions.SessionNotFound), \
                    self._locked():
                self._remove_keys([key])

    def seal(self):
        self.storage.in_store.seal(self.record)

    def join(self, partials):
        raise exceptions.UploadConflict(
            'A store-native upload takes no partial uploads.')

    def remove(self, only_if_idle=False):
        with self._locked():
            if only_if_idle and self.writing():
                return 0
            rec = self._read_record()
            if not (rec.handed_over or rec.dropped):
                if not self.storage.in_store.remove(rec):
                    return 0
            self.ioctx.remove_object(self.name)
        with contextlib.suppress(self.rados.ObjectNotFound):
            with self.rados.WriteOpCtx() as op:
                self.ioctx.remove_omap_keys(op, (self.image_id,))
                self.ioctx.operate_write_op(op, INDEX)
        return 1

    # -- the ledger's primitives (:mod:`~sizeaware.sessions.storage.ledger`)

    def _read_record(self):
        try:
            values = _omap(self.ioctx, self.rados, self.name, _RECORD)
        except self.rados.ObjectNotFound:
            raise exceptions.SessionNotFound(
                'No upload session for this image.') from None
        if _RECORD not in values:
            raise exceptions.SessionNotFound(
                'No upload session for this image.')
        return records.Record.from_json(values[_RECORD].decode())

    def _write_record(self, rec):
        self._set(_RECORD, rec.to_json())
        _index(self.storage.in_store, self.backend, rec)

    def _append_piece(self, start, end, crc):
        self._set('p.%020d.%020d' % (start, end), str(crc or 0))

    def _clear_pieces(self):
        self._remove_keys(list(_omap(self.ioctx, self.rados, self.name,
                                     'p.')))

    def _take_finalize(self):
        holder = self._finalize_holder()
        if holder is not None and holder[0] != self.cookie and (
                holder[1] > self.storage.clock()):
            return False
        self._set(_FINALIZER, '%s %f' % (
            self.cookie, self.storage.clock() + FINALIZE_LEASE))
        return True

    def _release_finalize(self):
        with self._locked():
            holder = self._finalize_holder()
            if holder is not None and holder[0] == self.cookie:
                self._remove_keys([_FINALIZER])

    def _finalizer_gone(self):
        holder = self._finalize_holder()
        return holder is None or holder[1] <= self.storage.clock()

    def _recover_writers(self, rec):
        # Leases of writers that died lapse by themselves; drop them.
        now = self.storage.clock()
        self._remove_keys(['w.' + cookie
                           for cookie, _, _, expires in self._leases()
                           if expires <= now])

    def _drop_data(self):
        rec = self.record
        if rec.handed_over or rec.dropped or (
                rec.phase == records.FINISHED_SUCCESS):
            # The image's now: Glance deletes it with the image.
            return
        if self.storage.in_store.remove(rec):
            rec.dropped = True
            self._write_record(rec)

    def _open_data(self, writable=True):
        for _ in range(50):
            try:
                return self.storage.in_store.open(self.record, writable)
            except FileNotFoundError:
                if self.record.object_id is not None or self.record.ended:
                    break
            # Created a moment ago on another node, its RBD image not yet
            # made: it is, once the record names its id.
            time.sleep(0.1)
            self.record = self._read_record()
        raise exceptions.SessionNotFound(
            'The upload session of this image has ended.')

    def _sync_data(self):
        # The writer's own handle: librbd caches per handle.
        if self._writing is not None:
            self._writing.sync()

    @contextlib.contextmanager
    def _locked(self):
        cookie = uuid.uuid4().hex
        delay = 0.002
        while True:
            try:
                self.ioctx.lock_exclusive(self.name, _RECORD, cookie,
                                          duration=_RECORD_LEASE)
                break
            except self.rados.ObjectBusy:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except self.rados.ObjectNotFound:
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.') from None
        try:
            try:
                rec = self._read_record()
            except exceptions.SessionNotFound:
                # The session was removed, and taking the lock made its
                # object again, empty: it goes.
                with contextlib.suppress(self.rados.ObjectNotFound):
                    self.ioctx.remove_object(self.name)
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.') from None
            if rec.created_at != self._born:
                # Removed, and a new session of the image made meanwhile.
                raise exceptions.SessionNotFound(
                    'The upload session of this image has ended.')
            yield
        finally:
            with contextlib.suppress(self.rados.ObjectNotFound,
                                     self.rados.Error):
                self.ioctx.unlock(self.name, _RECORD, cookie)

    # -- internals ----------------------------------------------------------

    def _leases(self):
        for key, value in _omap(self.ioctx, self.rados, self.name,
                                'w.').items():
            first, last, expires = value.decode().split()
            yield key[2:], int(first), int(last), float(expires)

    def _renew(self, key, first, last):
        """Extend this request's lease on its bytes, which must not have
        lapsed: a lapsed lease is never taken up again (another request
        may have written and claimed the bytes since), so a request that
        stalled that long writes nothing more.

        :raises sizeaware.exceptions.UploadConflict: it lapsed.
        """
        with self._locked():
            now = self.storage.clock()
            mine = [expires for cookie, _, _, expires in self._leases()
                    if cookie == self.cookie]
            if not mine or mine[0] <= now:
                raise exceptions.UploadConflict(
                    'This request stalled past its hold on bytes %d-%d; '
                    'send what is missing again.' % (first, last))
            self._set(key, '%d %d %f' % (first, last, now + WRITE_LEASE))

    def _finalize_holder(self):
        value = _omap(self.ioctx, self.rados, self.name,
                      _FINALIZER).get(_FINALIZER)
        if value is None:
            return None
        cookie, expires = value.decode().split()
        return cookie, float(expires)

    def _set(self, key, value):
        with self.rados.WriteOpCtx() as op:
            self.ioctx.set_omap(op, (key,), (value.encode(),))
            self.ioctx.operate_write_op(op, self.name)

    def _remove_keys(self, keys):
        if keys:
            with self.rados.WriteOpCtx() as op:
                self.ioctx.remove_omap_keys(op, tuple(keys))
                self.ioctx.operate_write_op(op, self.name)


class _Leased:
    """The RBD image's bytes, renewing the writer's lease as they flow."""

    def __init__(self, data, renew, clock):
        self.data = data
        self._renew = renew
        self._clock = clock
        self._renewed = clock()

    def pwrite(self, data, offset):
        if self._clock() - self._renewed > WRITE_LEASE / 3:
            self._renew()
            self._renewed = self._clock()
        self.data.pwrite(data, offset)

    def __getattr__(self, name):
        return getattr(self.data, name)


def _omap(ioctx, rados, name, prefix, limit=None):
    """``{key: value}`` of the omap of object ``name`` whose keys start
    with ``prefix`` (all of them when ``prefix`` is empty).

    :raises rados.ObjectNotFound: there is no such object.
    """
    found = {}
    after = ''
    while True:
        with rados.ReadOpCtx() as op:
            values, _ = ioctx.get_omap_vals(op, after, prefix, 512)
            ioctx.operate_read_op(op, name)
            batch = list(values)
        for key, value in batch:
            found[key] = value
            if limit is not None and len(found) >= limit:
                return found
        if len(batch) < 512:
            return found
        after = batch[-1][0]


def _index(in_store, backend, rec):
    """Keep the index entry of ``rec`` up to date."""
    rados = in_store.rados(backend)
    with rados.WriteOpCtx() as op:
        in_store.ioctx(backend).set_omap(op, (rec.image_id,),
                                         (rec.to_json().encode(),))
        in_store.ioctx(backend).operate_write_op(op, INDEX)

