"""Where each session lives: the spool, or the cluster of its RBD store.

The filter speaks to one :class:`~sizeaware.sessions.storage.Storage`;
this one sends each session to the storage that fits it. A session is
created in the cluster of the RBD store its image goes to when that store
gets a place (:meth:`~sizeaware.sessions.storage.in_store.InStore.place`:
``session_storage = store``, an upload to ``/file`` that is not a tus
partial or final upload), and in the spool otherwise; it is found in
whichever holds it, the spool first. The project's limit counts the
sessions of both.
"""

from sizeaware.sessions import storage
from sizeaware.sessions.storage import cluster as clusters


class Routed(storage.Storage):
    """:param spool: a :class:`~sizeaware.sessions.storage.spool.Spool`.
    :param in_store: an :class:`~sizeaware.sessions.storage.in_store.
        InStore`, or None: every session in the spool.
    """

    def __init__(self, spool, in_store=None):
        self.spool = spool
        self.limits = spool.limits
        self.in_store = in_store
        self.clusters = (None if in_store is None else clusters.Clusters(
            in_store, spool.limits, spool.clock))

    @property
    def clock(self):
        return self.spool.clock

    @clock.setter
    def clock(self, clock):
        # One time for every session, wherever it lives (tests move it).
        self.spool.clock = clock
        if self.clusters is not None:
            self.clusters.clock = clock

    def session(self, image_id, target, caller, part=None, ended=False):
        found = self.spool.session(image_id, target, caller, part, ended)
        if found is not None and not found.record.ended:
            return found
        other = self._in_clusters(image_id, target, caller, part, ended)
        if other is None:
            return found
        if found is None or not other.record.ended:
            # A live session wins over an ended one's record.
            if found is not None:
                found.close()
            return other
        other.close()
        return found

    def create(self, image_id, target, caller, size, sha256=None, *,
               part=None, reserved=False, gone=None, backend=None,
               **fields):
        """See :meth:`~sizeaware.sessions.storage.Storage.create`.

        :param backend: the store the upload names (Glance's
            ``X-Image-Meta-Store``), if any.
        """
        with self.spool.creating():
            existing = self.session(image_id, target, caller, part)
            if existing is not None:
                return existing
            place = None
            if (self.in_store is not None and target == 'file'
                    and part is None and fields.get('concat') is None):
                place = self.in_store.place(image_id, size, backend)
            if place is None:
                return self.spool.create_locked(
                    image_id, target, caller, size, sha256, part=part,
                    reserved=reserved, gone=gone,
                    others=self._records(self.clusters), **fields)
            return self.clusters.create(
                image_id, target, caller, size, sha256, reserved=reserved,
                gone=gone, place=place, others=self._records(self.spool),
                **fields)

    def records(self, limit=None):
        for key, rec in self.spool.records(limit):
            yield ('spool', key), rec
        if self.clusters is not None:
            for key, rec in self.clusters.records(limit):
                yield ('cluster', key), rec

    def open(self, key, caller):
        where, key = key
        return (self.spool if where == 'spool' else self.clusters).open(
            key, caller)

    def claim_sweep(self, interval, now):
        return self.spool.claim_sweep(interval, now)

    def sweep_leftovers(self, now):
        self.spool.sweep_leftovers(now)

    def _in_clusters(self, image_id, target, caller, part, ended):
        if self.clusters is None:
            return None
        return self.clusters.session(image_id, target, caller, part, ended)

    @staticmethod
    def _records(storage):
        if storage is None:
            return []
        return [rec for _, rec in storage.records()]
