"""glance_store's RBD driver, with ranged reads.

An RBD image is a block device: any byte of it can be read at any time,
at no more cost than its neighbours. glance_store's driver still reads
images only whole, from the first byte, and does not declare random
access, so Glance answers 400 to a download that carries ``Range`` (even
``bytes=0-``) for an image in RBD.

This driver declares ``READ_RANDOM`` and honours ``offset`` and
``chunk_size`` in ``get()``: it reads the RBD image (its snapshot, as the
stock driver does) from ``offset`` on, ``chunk_size`` bytes or to its end,
in reads of ``rbd_store_chunk_size``. Glance then answers a ranged download
with 206 and exactly the bytes asked for. A read that would end past the
RBD image (an image shorter than Glance's record says) raises instead of
ending short.

Writes, deletes and locations are the stock driver's, unchanged: images
stored by either driver stay readable by the other. Enable it by giving
the backend the type ``sizeaware_rbd`` instead of ``rbd``; its options are
those of the ``rbd`` driver::

    [DEFAULT]
    enabled_backends = ceph:sizeaware_rbd

    [ceph]
    rbd_store_pool = images
    ...
"""

from glance_store import capabilities
from glance_store import exceptions
from glance_store._drivers import rbd as rbd_store

# glance_store finds a driver's location class by name, in the driver's own
# module: image locations are the RBD driver's, unchanged.
StoreLocation = rbd_store.StoreLocation

#: The entry point name, also claimed as a scheme: glance_store looks a
#: backend's store up by its type used as a URI scheme. The locations it
#: writes stay ``rbd://``.
DRIVER_NAME = 'sizeaware_rbd'


class ShortImage(exceptions.BackendException):
    """The RBD image ends before the bytes a read was asked for."""


class RangeReader:
    """Bytes ``[offset, offset + length)`` of an RBD image, as an iterable
    of pieces of at most ``piece`` bytes.

    The image is opened when iteration starts, read-only, and closed with
    its cluster connection when it ends, is abandoned (``close()`` on the
    generator) or fails. Every piece is read at its offset, so nothing
    depends on what was read before it.
    """

    def __init__(self, store, location, offset, length, piece):
        self.store = store
        self.pool = location.pool or store.pool
        self.image = location.image
        self.snapshot = location.snapshot
        self.offset = offset
        self.length = length
        self.piece = piece

    def __iter__(self):
        store = self.store
        try:
            with store.get_connection(conffile=store.conf_file,
                                      rados_id=store.user) as conn, \
                    conn.open_ioctx(self.pool) as ioctx, \
                    rbd_store.rbd.Image(ioctx, self.image,
                                        snapshot=self.snapshot,
                                        read_only=True) as image:
                end = self.offset + self.length
                size = image.size()
                if end > size:
                    raise ShortImage(
                        'RBD image %s has %d bytes, a read asks for bytes '
                        '%d to %d' % (self.image, size, self.offset, end))
                position = self.offset
                while position < end:
                    data = image.read(position,
                                      min(self.piece, end - position))
                    if not data:
                        raise ShortImage(
                            'RBD image %s ended at byte %d of %d'
                            % (self.image, position, end))
                    position += len(data)
                    yield data
        except rbd_store.rbd.ImageNotFound:
            raise exceptions.NotFound(
                message='RBD image %s does not exist' % self.image)


class Store(rbd_store.Store):
    """The RBD store; see the module docstring."""

    _CAPABILITIES = (rbd_store.Store._CAPABILITIES
                     | capabilities.BitMasks.READ_RANDOM)

    def get_schemes(self):
        return super().get_schemes() + (DRIVER_NAME,)

    @capabilities.check
    def get(self, location, offset=0, chunk_size=None, context=None):
        """The image's bytes from ``offset`` on, ``chunk_size`` of them or
        all that are left, and their number.

        :raises: ``glance_store.exceptions.NotFound`` if the image does not
            exist; :class:`ShortImage` if the range lies past its end.
        """
        size = self.get_size(location, context=context)
        offset = offset or 0
        if offset < 0 or offset > size or (
                chunk_size is not None and chunk_size < 0):
            raise ShortImage('RBD image %s has %d bytes, a read asks for '
                             '%s bytes from byte %d'
                             % (location.store_location.image, size,
                                chunk_size, offset))
        length = size - offset if chunk_size is None else chunk_size
        return (RangeReader(self, location.store_location, offset, length,
                            self.READ_CHUNKSIZE),
                length)
