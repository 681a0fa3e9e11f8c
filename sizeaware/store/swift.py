"""glance_store's Swift driver, sending every segment with its true length.

For an image of known size at or above ``swift_store_large_object_size``,
glance_store writes one Swift object per segment of
``swift_store_large_object_chunk_size``. Since glance_store 5.0 (the change
that added size validation for uploads) it announces the full segment size
as ``Content-Length`` for every segment, the short last one included; Swift
then waits for bytes that never come until its ``client_timeout`` (60 s by
default), and the upload fails with a 500. With the default options that is
every known-size upload of at least 5,242,880,000 bytes that is not a
multiple of 204,800,000 bytes, and python-glanceclient 4.10+ and
openstacksdk 4.18+ send the size. glance_store 4.x shortened the last
segment, and this driver changes nothing there.

This driver lets glance_store's own ``add()`` run unchanged and corrects
only what it announces: it counts what the store reads of the image, so
each segment reader knows how much of the image is left when it starts,
and the connection it hands out sends that length, never more, as the
segment's ``Content-Length``. Nothing else of the upload is touched; reads,
deletes and locations are the stock driver's, so images stay readable by
either driver.

Enable it by giving the backend the type ``sizeaware_swift`` instead of
``swift``; its options are those of the ``swift`` driver::

    [DEFAULT]
    enabled_backends = objects:sizeaware_swift

    [objects]
    swift_store_auth_address = ...
"""

import functools

from glance_store import exceptions
from glance_store._drivers.swift import store as swift_store

# glance_store finds a driver's location class by name, in the driver's own
# module: image locations are the Swift driver's, unchanged.
StoreLocation = swift_store.StoreLocation

#: The entry point name, also claimed as a scheme: glance_store looks a
#: backend's store up by its type used as a URI scheme.
DRIVER_NAME = 'sizeaware_swift'

# Set on a segment reader: the bytes of the image it may carry.
_LENGTH_ATTR = 'sizeaware_length'


class _CountedImage:
    """The image as the store reads it, counting what has been read.

    Held to its size: once segments announce their true length, an image
    longer than its size would lose its tail quietly (swiftclient stops at
    the length, and glance_store's own check never sees the rest), and one
    shorter would leave Swift waiting for the rest of the last segment. Both
    are refused as glance_store refuses a mismatch, with ``Invalid``, on
    which it removes the segments already written.
    """

    def __init__(self, image_file, size):
        self._file = image_file
        self.size = size
        self.remaining = size

    def read(self, size=-1):
        data = self._file.read(size)
        self.remaining -= len(data)
        if self.remaining < 0:
            raise exceptions.Invalid(
                message='Size exceeds: expected %d bytes, got more'
                % self.size)
        if not data and size != 0 and self.remaining:
            raise exceptions.Invalid(
                message='Size mismatch: expected %d bytes, got %d bytes'
                % (self.size, self.size - self.remaining))
        return data


def _sized_reader(reader_class, fd, *args, **kwargs):
    """A segment reader of ``reader_class`` that knows its true length.

    Taken before the reader is made: both of glance_store's readers read
    ahead as they are made (one byte, or the whole segment when buffering).
    """
    left = fd.remaining if isinstance(fd, _CountedImage) else None
    reader = reader_class(fd, *args, **kwargs)
    if left is not None:
        setattr(reader, _LENGTH_ATTR, max(0, min(reader.total, left)))
    return reader


class _SegmentConnection:
    """A swiftclient connection whose ``put_object`` announces a segment
    reader's true length instead of a longer one."""

    def __init__(self, connection):
        self._connection = connection

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def put_object(self, container, obj, contents, content_length=None,
                   *args, **kwargs):
        length = getattr(contents, _LENGTH_ATTR, None)
        if length is not None and content_length is not None:
            content_length = min(content_length, length)
        return self._connection.put_object(container, obj, contents,
                                           content_length, *args, **kwargs)


def _segment_connection(get_connection):
    return _SegmentConnection(get_connection())


class _TrueSegmentLengths:
    """What this driver adds to either Swift store class."""

    def get_schemes(self):
        return super().get_schemes() + (DRIVER_NAME,)

    def configure(self, *args, **kwargs):
        super().configure(*args, **kwargs)
        self.reader_class = functools.partial(_sized_reader,
                                              self.reader_class)

    def get_manager(self, *args, **kwargs):
        manager = super().get_manager(*args, **kwargs)
        manager.get_connection = functools.partial(_segment_connection,
                                                   manager.get_connection)
        return manager

    def add(self, image_id, image_file, image_size, *args, **kwargs):
        if image_size:
            image_file = _CountedImage(image_file, image_size)
        return super().add(image_id, image_file, image_size, *args,
                           **kwargs)


class SingleTenantStore(_TrueSegmentLengths, swift_store.SingleTenantStore):
    """The single-tenant Swift store; see the module docstring."""


class MultiTenantStore(_TrueSegmentLengths, swift_store.MultiTenantStore):
    """The multi-tenant Swift store; see the module docstring."""


_OURS = {swift_store.SingleTenantStore: SingleTenantStore,
         swift_store.MultiTenantStore: MultiTenantStore}


def Store(conf, backend=None):
    """The driver, as glance_store's ``swift`` entry point is a factory.

    The stock factory checks the options and chooses single- or
    multi-tenant; the same choice is then made with this driver's class.
    """
    stock = swift_store.Store(conf, backend=backend)
    return _OURS[type(stock)](conf, backend=backend)


Store.OPTIONS = swift_store.Store.OPTIONS
