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

Reads are this driver's own. glance_store's driver reads an image with
one GET and does not declare random access: a connection that breaks or
stalls mid-image cuts Glance's download short under a ``Content-Length``
that promised more, and Glance answers 400 to any ``Range``. Its own retry
(``swift_store_retry_get_count``, off by default) re-requests without
``If-Match`` and, once spent, ends the stream quietly short; swiftclient
retries again beneath it. This driver reads with
:class:`sizeaware.store.restart.RestartingReader` instead: a read that
breaks (reset, timeout, short body, stall) is asked for again from the
exact byte it stopped at, pinned to the first answer's ETag with
``If-Match``, and only an exact 206 is spliced on; an object replaced
meanwhile is an error, never a splice. Each request is one plain
``GET`` of swiftclient's (no ``Connection``, so none of its retries) with
connect and read timeouts, so ``read_retries`` is the one count of retries
of a read and ``swift_store_retry_get_count`` is not used. The driver also
declares ``READ_RANDOM`` and honours ``offset`` and ``chunk_size``, which
Swift serves as a ranged GET, so Glance's ranged downloads work. A first
request that gets no answer within the retries (Swift refusing or
dropping connections, timing out, answering 5xx) is Glance's 503, as
with the S3 and HTTP drivers, not a 500.

Enable it by giving the backend the type ``sizeaware_swift`` instead of
``swift``; its options are those of the ``swift`` driver, plus the read
options of :data:`sizeaware.opts.store_read_opts` (``read_retries``,
``retry_backoff``, ``connect_timeout``, ``read_timeout``,
``stall_timeout``)::

    [DEFAULT]
    enabled_backends = objects:sizeaware_swift

    [objects]
    swift_store_auth_address = ...
    read_retries = 5
"""

import functools

from glance_store import capabilities
from glance_store import exceptions
from glance_store._drivers.swift import store as swift_store
from oslo_config import cfg
import requests
import urllib3

try:
    from swiftclient import client as swift_client
except ImportError:
    # As glance_store's own driver: the store then refuses to configure,
    # and the module still imports (for the documentation, for instance).
    swift_client = None

from sizeaware import opts
from sizeaware.store import restart

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


#: What a read through swiftclient raises when its connection breaks or
#: times out: requests' errors while the answer is awaited, urllib3's while
#: its body is read (a reset, a body shorter than its Content-Length, a
#: stall past the body's socket timeout).
BROKEN = restart.BROKEN + (requests.exceptions.RequestException,
                           urllib3.exceptions.HTTPError)


class _ObjectRanges:
    """``open_range`` of :class:`~sizeaware.store.restart.RestartingReader`
    for one Swift object: one GET per call, on a connection of its own."""

    def __init__(self, store, manager, location, policy):
        self.store = store
        self.manager = manager
        self.location = location
        self.policy = policy

    def __call__(self, want):
        # The manager hands out a connection whose token is renewed when it
        # is about to expire; only its storage URL and token are used.
        connection = self.manager.get_connection()
        headers = {}
        if want.range is not None:
            headers['Range'] = want.range
        if want.etag is not None:
            headers['If-Match'] = want.etag
        parsed, http_conn = swift_client.http_connection(
            connection.url, cacert=self.store.cacert,
            insecure=self.store.insecure,
            timeout=(self.policy.connect_timeout, self.policy.read_timeout))
        try:
            resp_headers, body = swift_client.get_object(
                connection.url, connection.token, self.location.container,
                self.location.obj, http_conn=(parsed, http_conn),
                resp_chunk_size=restart.CHUNK_SIZE, headers=headers)
        except swift_client.ClientException as exc:
            http_conn.close()
            if exc.http_status == 404:
                raise exceptions.NotFound(
                    message='Swift could not find object %s.'
                    % self.location.obj)
            if exc.http_status is None:
                raise
            headers = getattr(exc, 'http_response_headers', None) or {}
            return restart.Part(status=exc.http_status,
                                etag=headers.get('etag'))
        except BaseException:
            http_conn.close()
            raise
        restart.set_body_timeout(body.resp.raw, self.policy.stall_timeout)
        length = resp_headers.get('content-length')
        return restart.Part(
            status=body.resp.status_code, body=body,
            etag=resp_headers.get('etag'),
            content_range=resp_headers.get('content-range'),
            content_length=None if length is None else int(length),
            close=http_conn.close)


class _ManagedReader(restart.RestartingReader):
    """A restarting read that holds its connection manager until it is
    closed: the manager renews the token for restarts, and a multi-tenant
    one revokes its trust when it is let go."""

    def __init__(self, manager, *args, **kwargs):
        self._manager = manager
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self._let_go()
            raise

    def close(self):
        try:
            super().close()
        finally:
            self._let_go()

    def _let_go(self):
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.__exit__(None, None, None)


class _RestartingReads:
    """Ranged, restarting reads for either Swift store class."""

    _CAPABILITIES = (swift_store.BaseStore._CAPABILITIES
                     | capabilities.BitMasks.READ_RANDOM)
    OPTIONS = swift_store.BaseStore.OPTIONS + opts.store_read_opts

    @capabilities.check
    def get(self, location, connection=None, offset=0, chunk_size=None,
            context=None):
        """The object's bytes from ``offset`` on, ``chunk_size`` of them or
        all that are left, and their number; see the module docstring.

        :raises: ``glance_store.exceptions.NotFound`` if the object does
            not exist; ``glance_store.exceptions.RemoteServiceUnavailable``
            (Glance's 503) when the first request gets no answer within
            the retries (refused, timed out, 5xx); a
            :class:`~sizeaware.exceptions.BackendReadError` when the first
            answer is not the one asked for. Once reading, the stream
            raises one when it cannot go on, never ends short.
        """
        policy = restart.Policy.from_conf(self._read_conf())
        store_location = location.store_location
        manager = self.get_manager(store_location, context,
                                   allow_reauth=policy.read_retries > 0)
        reader = restart.open_reader(
            _ManagedReader, manager,
            _ObjectRanges(self, manager, store_location, policy),
            offset or 0, chunk_size, policy=policy, broken=BROKEN,
            name='Swift object %s/%s' % (store_location.container,
                                         store_location.obj))
        return restart.indexable(reader), reader.expected

    def _read_conf(self):
        """The backend's options: glance_store 5.x keeps them (with the
        shared defaults grafted on) in ``store_conf``; 4.x reads the
        backend's section itself."""
        store_conf = getattr(self, 'store_conf', None)
        if store_conf is not None:
            return store_conf
        if self.backend_group:
            return getattr(self.conf, self.backend_group)
        return self.conf.glance_store


class SingleTenantStore(_TrueSegmentLengths, _RestartingReads,
                        swift_store.SingleTenantStore):
    """The single-tenant Swift store; see the module docstring."""


class MultiTenantStore(_TrueSegmentLengths, _RestartingReads,
                       swift_store.MultiTenantStore):
    """The multi-tenant Swift store; see the module docstring."""


_OURS = {swift_store.SingleTenantStore: SingleTenantStore,
         swift_store.MultiTenantStore: MultiTenantStore}


def Store(conf, backend=None):
    """The driver, as glance_store's ``swift`` entry point is a factory.

    The stock factory checks the options and chooses single- or
    multi-tenant; the same choice is then made with this driver's class.
    """
    stock = swift_store.Store(conf, backend=backend)
    try:
        conf.register_opts(opts.store_read_opts,
                           group=backend or 'glance_store')
    except cfg.DuplicateOptError:
        pass
    return _OURS[type(stock)](conf, backend=backend)


Store.OPTIONS = swift_store.Store.OPTIONS + opts.store_read_opts
