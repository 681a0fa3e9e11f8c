"""Store-native sessions: the image's bytes written straight into the store
it will live in, then handed to Glance by their location.

A spooled session writes every image twice: into the spool, then, after
the last byte, through Glance into the store, while its client waits
(about 5 s per GiB). As ovirt-imageio writes ranged PUTs at their offsets
into the target disk, and Nova's RBD snapshots hand Glance only a
location, a store-native session writes each range at its offset into the
very object the store will serve, and its finalize only checks what is
there and registers its location with Glance's location API
(:mod:`sizeaware.sessions.locations`): the image is ``active`` a moment
after its last byte, whatever its size, and the API node's disk holds
none of it.

The place is chosen when the session is created, from the backend the
upload names (``X-Image-Meta-Store``) or the default one, and kept in the
session's record (``store``, ``location``). It is always derived from the
image id and the store's own configuration, never from the client, so a
session names nothing but the object glance_store would have written for
the image. The session's record, pieces and locks are kept beside the
bytes, in the same pool (:mod:`~sizeaware.sessions.storage.cluster`), so
any API node continues it.

Stores that get a place:

``rbd`` (glance_store's RBD driver, or ``sizeaware_rbd``)
    the RBD image ``<image_id>`` in the store's pool, created at the
    declared size (never resized) with the order the driver gives its
    images; ranges are written at their offsets through librbd and flushed
    before each claim; at finalize the snapshot ``snap`` is made and
    protected, as the driver does, and ``rbd://<fsid>/<pool>/<image_id>/
    snap`` is handed to Glance. The stock driver then reads, clones and
    deletes it as one of its own. While the session lasts the image has
    the driver's features but the exclusive lock (and the object map and
    fast diff that need it): requests on several nodes write it at once,
    and a lock held by a killed writer would stall the next one until the
    cluster gives up on it (about 30 s). The seal turns them on.

``s3`` (glance_store's S3 driver, or ``sizeaware_s3``)
    the object ``<image_id>`` in the store's bucket, the key the driver
    writes, as a multipart upload opened with the session; each range
    goes up as parts as it arrives, and finalize completes the upload
    (:mod:`~sizeaware.sessions.storage.bucket`) and hands Glance the
    location the driver itself would have recorded.

Glance's location API refuses ``file://`` locations (they would let a
caller point an image at any file of the API node: Launchpad bugs
942118 and 1400966), so a filesystem store gets the spool, as does every
other store, every ``/stage`` upload and every tus partial or final
upload (concatenation joins spooled parts without copying them).
"""

import math
import threading
from urllib import parse

from oslo_log import log as logging

from sizeaware import backends
from sizeaware import exceptions

LOG = logging.getLogger(__name__)

#: The snapshot glance_store's RBD driver serves an image from.
SNAPSHOT = 'snap'
#: Backend types whose images are RBD images.
RBD_TYPES = ('rbd', 'sizeaware_rbd')
#: Backend types whose images are S3 objects.
S3_TYPES = ('s3', 'sizeaware_s3')


class InStore:
    """Places for store-native sessions in Glance's configured stores.

    :param conf: Glance's configuration (``enabled_backends``,
        ``[glance_store]``), as the filter's middleware sees it.
    :param locations: a :class:`~sizeaware.sessions.locations.Locations`,
        which hands a finished session's location to Glance.
    :param find_store: glance_store's lookup of a backend's store
        (:func:`sizeaware.backends.find_store`).
    """

    def __init__(self, conf, locations, find_store=backends.find_store):
        self.conf = conf
        self.locations = locations
        self.find_store = find_store
        # One cluster connection per backend and process, opened on first
        # use: connecting costs more than writing a range.
        self._clusters = {}
        self._buckets = {}
        self._stores = {}
        self._lock = threading.Lock()

    def place(self, image_id, size, backend=None):
        """The place for ``image_id``'s ``size`` bytes in ``backend`` (or
        the default one): ``(backend, url)``, or None where the store gets
        the spool. Nothing is made: the session's record names the place
        before :meth:`create` makes it, so no crash leaves bytes in the
        store that no session names.

        :raises sizeaware.exceptions.UnknownStore: a backend Glance does
            not have.
        """
        # Asked now, not when the filter was made: Glance's eventlet server
        # loads the pipeline before it registers glance_store's options.
        multi, default = backends.configured(self.conf)
        name = backend or default
        if name is None:
            return None
        try:
            store = self._store(name, multi)
        except Exception as exc:
            if backend is None:
                # Glance's own default, not found here: the spool serves.
                LOG.warning('Store-native sessions: default store %s not '
                            'found (%r); using the spool.', name, exc)
                return None
            raise exceptions.UnknownStore(
                'Glance has no store %s.' % ascii(backend)) from exc
        if 'rbd' in store.get_schemes():
            cluster = self._cluster(name, store)
            return name, 'rbd://%s/%s/%s/%s' % (
                parse.quote(cluster.fsid, ''), parse.quote(store.pool, ''),
                parse.quote(image_id, ''), SNAPSHOT)
        if 's3' in store.get_schemes():
            self.s3(name)     # the bucket made, as the driver would
            from glance_store._drivers import s3 as s3_driver
            return name, s3_driver.StoreLocation(
                store_specs={'scheme': store.scheme,
                             'bucket': store.bucket, 'key': image_id,
                             's3serviceurl': store.full_s3_host,
                             'accesskey': store.access_key,
                             'secretkey': store.secret_key},
                conf=store.conf,
                backend_group=store.backend_group).get_uri()
        return None

    def kind(self, backend):
        """``'rbd'`` or ``'s3'``: which ledger a backend's sessions get."""
        return 's3' if backend in self.s3_backends() else 'rbd'

    def rbd_backends(self):
        """The names of Glance's RBD backends."""
        enabled = backends.types(self.conf)
        if enabled:
            return [name for name, kind in sorted(enabled.items())
                    if kind in RBD_TYPES]
        default = backends.configured(self.conf)[1]
        return [default] if default in RBD_TYPES else []

    def s3_backends(self):
        """The names of Glance's S3 backends."""
        enabled = backends.types(self.conf)
        if enabled:
            return [name for name, kind in sorted(enabled.items())
                    if kind in S3_TYPES]
        default = backends.configured(self.conf)[1]
        return [default] if default in S3_TYPES else []

    def s3(self, backend):
        """``(client, bucket)`` of an S3 backend: a client made from the
        backend's own options, as its driver makes one, and its bucket
        (made if missing and ``s3_store_create_bucket_on_put`` says so).
        """
        with self._lock:
            found = self._buckets.get(backend)
        if found is not None:
            return found
        store = self._store(backend)
        options = (self.conf[store.backend_group] if store.backend_group
                   else self.conf.glance_store)
        import boto3
        from botocore import config as boto_config
        client = boto3.session.Session(
            aws_access_key_id=store.access_key,
            aws_secret_access_key=store.secret_key).client(
                's3', endpoint_url=store.full_s3_host,
                region_name=getattr(store, 'region_name', None),
                use_ssl=store.full_s3_host.startswith('https://'),
                verify=getattr(options, 's3_store_cacert', None) or None,
                config=boto_config.Config(s3={
                    'addressing_style':
                        options.s3_store_bucket_url_format}))
        bucket = store.bucket
        try:
            client.head_bucket(Bucket=bucket)
        except client.exceptions.ClientError:
            if not options.s3_store_create_bucket_on_put:
                raise
            client.create_bucket(Bucket=bucket)
        with self._lock:
            return self._buckets.setdefault(backend, (client, bucket))

    def ioctx(self, backend):
        """The RADOS I/O context of ``backend``'s pool."""
        return self._cluster(backend).ioctx

    def rados(self, backend):
        """The ``rados`` module the store's driver uses."""
        return self._cluster(backend).rados

    def create(self, rec):
        """Make the empty object at the record's place, at its size; its
        id in the store.

        :raises sizeaware.exceptions.UploadConflict: the store already
            holds an object for the image.
        """
        cluster = self._cluster_of(rec)
        rbd = cluster.rbd
        try:
            rbd.RBD().create(cluster.ioctx, _image(rec), rec.size,
                             cluster.order, old_format=False,
                             features=cluster.features & ~cluster.locking)
        except rbd.ImageExists:
            raise exceptions.UploadConflict(
                'The store already holds data for this image.') from None
        with rbd.Image(cluster.ioctx, _image(rec), read_only=True) as image:
            return image.id()

    def open(self, rec, writable=True):
        """The object's bytes, as :mod:`~sizeaware.sessions.storage.
        blocks` reads and writes them.

        :raises FileNotFoundError: it is gone.
        """
        cluster = self._cluster_of(rec)
        try:
            image = cluster.rbd.Image(cluster.ioctx, _image(rec),
                                      read_only=not writable)
        except cluster.rbd.ImageNotFound:
            raise FileNotFoundError(_image(rec)) from None
        if writable:
            # librbd writes through its cache until a handle's first flush
            # (rbd_cache_writethrough_until_flush): every 64 KiB piece would
            # wait for the OSDs.
            image.flush()
        return RBDImage(image, cluster.rbd)

    def seal(self, rec):
        """Make the object what the store serves: the driver's features
        and the protected snapshot it makes of every image it writes.

        :raises sizeaware.exceptions.CommitFailed: the cluster refused.
        """
        cluster = self._cluster_of(rec)
        rbd = cluster.rbd
        try:
            with rbd.Image(cluster.ioctx, _image(rec)) as image:
                image.flush()
                _lock_features(cluster, image, rec)
                if SNAPSHOT not in {snap['name']
                                    for snap in image.list_snaps()}:
                    image.create_snap(SNAPSHOT)
                if not image.is_protected_snap(SNAPSHOT):
                    image.protect_snap(SNAPSHOT)
        except rbd.Error as exc:
            raise exceptions.CommitFailed(
                'The RBD image could not be made what the store serves: '
                '%s.' % exc) from exc

    def remove(self, rec):
        """Remove what the session wrote to the store (its snapshot too,
        made by a finalize that Glance then refused), and only that: an
        RBD image of the same name with another id (Glance's own, from a
        plain upload after the session ended) is left alone.

        :returns: whether nothing of the session is left; False while a
            request (on any node) still has the image open: the sweep
            tries again.
        """
        cluster = self._cluster_of(rec)
        rbd = cluster.rbd
        try:
            with rbd.Image(cluster.ioctx, _image(rec)) as image:
                if rec.object_id is not None and image.id() != rec.object_id:
                    return True
                for snap in list(image.list_snaps()):
                    if image.is_protected_snap(snap['name']):
                        image.unprotect_snap(snap['name'])
                    image.remove_snap(snap['name'])
            rbd.RBD().remove(cluster.ioctx, _image(rec))
        except rbd.ImageNotFound:
            pass
        except rbd.ImageBusy:
            LOG.warning('Store-native session: image_id=%s: its RBD image '
                        'is still open; the sweep removes it later.',
                        rec.image_id)
            return False
        return True

    def _cluster_of(self, rec):
        return self._cluster(rec.store)

    def _cluster(self, name, store=None):
        """The backend's cluster connection, made once per process."""
        with self._lock:
            cluster = self._clusters.get(name)
        if cluster is not None:
            return cluster
        cluster = _Cluster(store or self._store(name))
        with self._lock:
            kept = self._clusters.setdefault(name, cluster)
        if kept is not cluster:
            cluster.close()
        return kept

    def _store(self, name, multi=None):
        """glance_store's store object of a backend, made once per process:
        only its configuration is read (making one connects to the
        cluster, for an RBD store, to learn its fsid)."""
        with self._lock:
            store = self._stores.get(name)
        if store is None:
            if multi is None:
                multi = backends.configured(self.conf)[0]
            store = self.find_store(name, multi)
            with self._lock:
                store = self._stores.setdefault(name, store)
        return store


class _Cluster:
    """One RBD store's pool, connected as its driver connects."""

    def __init__(self, store):
        from glance_store._drivers import rbd as rbd_driver
        self.rbd = rbd_driver.rbd
        self.rados = rbd_driver.rados
        self.client = rbd_driver.rados.Rados(conffile=store.conf_file,
                                             rados_id=store.user)
        options = getattr(store, 'store_conf', None) or (
            store.conf[store.backend_group] if store.backend_group
            else store.conf.glance_store)     # glance_store 4.x
        timeout = options.rados_connect_timeout
        if timeout >= 0:
            # As the driver does: no call waits forever on the cluster.
            for option in ('rados_osd_op_timeout', 'rados_mon_op_timeout',
                           'client_mount_timeout'):
                self.client.conf_set(option, str(timeout))
        try:
            self.client.connect()
            self.fsid = self.client.get_fsid()
            self.ioctx = self.client.open_ioctx(store.pool)
        except BaseException:
            self.client.shutdown()
            raise
        self.order = int(math.log(store.WRITE_CHUNKSIZE, 2))
        features = self.client.conf_get('rbd_default_features')
        self.features = int(features or 0) or self.rbd.RBD_FEATURE_LAYERING
        #: The features off while the session lasts (see the module).
        self.locking = (self.rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                        | self.rbd.RBD_FEATURE_OBJECT_MAP
                        | self.rbd.RBD_FEATURE_FAST_DIFF
                        | self.rbd.RBD_FEATURE_JOURNALING)

    def close(self):
        self.ioctx.close()
        self.client.shutdown()


class RBDImage:
    """An open RBD image, with :class:`~sizeaware.sessions.storage.
    blocks.LocalFile`'s methods."""

    def __init__(self, image, rbd):
        self.image = image
        self.rbd = rbd

    def pread(self, length, offset):
        size = self.image.size()
        if offset >= size:
            return b''
        return self.image.read(offset, min(length, size - offset))

    def pwrite(self, data, offset):
        try:
            self.image.write(bytes(data), offset)
        except (self.rbd.NoSpace, self.rbd.DiskQuotaExceeded) as exc:
            raise exceptions.SpoolFull(
                'The store\'s pool is full: %s. What was written before is '
                'kept.' % exc) from exc

    def sync(self):
        self.image.flush()

    def size(self):
        return self.image.size()

    def close(self):
        if self.image is not None:
            self.image.close()
            self.image = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _lock_features(cluster, image, rec):
    """Turn on the features that were off while the session lasted: the
    exclusive lock first, the object map and fast diff (which need it)
    together. Librbd asks every client that has the image open first, and
    a killed writer's client answers only once the cluster gave up on it
    (about 30 s): the image is then served as it is, which every reader
    and clone supports, and the line below says so."""
    rbd = cluster.rbd
    missing = cluster.features & cluster.locking & ~image.features()
    try:
        for features in (
                rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
                rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF,
                rbd.RBD_FEATURE_JOURNALING):
            if missing & features:
                image.update_features(missing & features, True)
        if missing & rbd.RBD_FEATURE_OBJECT_MAP:
            image.rebuild_object_map()
    except (rbd.Timeout, rbd.ConnectionShutdown) as exc:
        LOG.warning('Store-native session: image_id=%s keeps RBD features '
                    '%#x off: %s', rec.image_id,
                    missing & ~image.features(), exc)


def _image(rec):
    return rec.image_id
