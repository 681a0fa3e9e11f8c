"""Where each session lives: the spool, or beside its bytes in the store.

The filter speaks to one :class:`~sizeaware.sessions.storage.Storage`;
this one sends each session to the storage that fits it. A session is
created beside the bytes in the store its image goes to when that store
gets a place (:meth:`~sizeaware.sessions.storage.in_store.InStore.place`:
``session_storage = store``, an upload to ``/file`` that is not a tus
partial or final upload): in the RBD pool
(:mod:`~sizeaware.sessions.storage.cluster`) or the S3 bucket
(:mod:`~sizeaware.sessions.storage.bucket`); in the spool otherwise. It is
found in whichever holds it, the spool first. The project's limit counts
the sessions of all of them.
"""

import os

from sizeaware.sessions import storage
from sizeaware.sessions.storage import bucket as buckets
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
        self.clusters = self.buckets = None
        if in_store is not None:
            self.clusters = clusters.Clusters(in_store, spool.limits,
                                              spool.clock)
            self.buckets = buckets.Buckets(
                in_store, os.path.join(spool.directory, '.store-locks'),
                spool.limits, spool.clock)

    @property
    def clock(self):
        return self.spool.clock

    @clock.setter
    def clock(self, clock):
        # One time for every session, wherever it lives (tests move it).
        self.spool.clock = clock
        for other in (self.clusters, self.buckets):
            if other is not None:
                other.clock = clock

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
                    others=self._records(self.clusters, self.buckets),
                    **fields)
            if self.in_store.kind(place[0]) == 's3':
                where, others = self.buckets, (self.spool, self.clusters)
            else:
                where, others = self.clusters, (self.spool, self.buckets)
            return where.create(
                image_id, target, caller, size, sha256, reserved=reserved,
                gone=gone, place=place, others=self._records(*others),
                **fields)

    def records(self, limit=None):
        for key, rec in self.spool.records(limit):
            yield ('spool', key), rec
        for name, other in (('cluster', self.clusters),
                            ('bucket', self.buckets)):
            if other is not None:
                for key, rec in other.records(limit):
                    yield (name, key), rec

    def open(self, key, caller):
        where, key = key
        return {'spool': self.spool, 'cluster': self.clusters,
                'bucket': self.buckets}[where].open(key, caller)

    def claim_sweep(self, interval, now):
        return self.spool.claim_sweep(interval, now)

    def sweep_leftovers(self, now):
        self.spool.sweep_leftovers(now)

    def _in_clusters(self, image_id, target, caller, part, ended):
        """The session in an RBD pool or an S3 bucket, if any."""
        for other in (self.clusters, self.buckets):
            if other is not None:
                found = other.session(image_id, target, caller, part, ended)
                if found is not None:
                    return found
        return None

    @staticmethod
    def _records(*storages):
        return [rec for where in storages if where is not None
                for _, rec in where.records()]
