"""Per-chunk digests of an image, kept in the image's properties.

Glance limits a property value to 255 characters and, by default, an image
to 128 properties (``image_property_quota``). The manifest takes one
header property and at most :data:`MAX_DIGEST_PROPERTIES` more, whatever
the image's size: the chunk size doubles (from :data:`MIN_CHUNK`) until
the chunks' digests fit.

``sizeaware_chunks``
    ``v1 <algorithm> <chunk size> <chunk count> <digest bytes>``, e.g.
    ``v1 crc32c 8388608 1280 4``.
``sizeaware_chunks_00`` ... ``sizeaware_chunks_NN``
    the digests, each cut to ``<digest bytes>``, concatenated in chunk
    order and encoded in unpadded URL-safe base64, as many to a property
    as fit in 255 characters (47 CRC-32Cs, 23 cut SHA-256s).

The chunk digests are there to find accidental corruption and to fetch
again only the chunk it hit; the whole-image ``os_hash_value`` that Glance
computes itself stays the check against anything else, and the client
always verifies it. So the default is CRC-32C, the checksum Ceph's
BlueStore, S3 (``x-amz-checksum-crc32c``), iSCSI and ext4 keep against
accidental corruption: computed in hardware at about 20 GiB/s, it costs a
download next to nothing, where SHA-256 (1.7 GiB/s with the CPU's SHA
instructions) takes a noticeable share of a core that also receives,
writes and computes the whole image's SHA-512. Any hashlib algorithm may
be chosen instead; its digest is cut to :data:`DIGEST_BYTES` (a 64-bit
digest misses one corruption in 2**64, a CRC-32C one in 2**32 and every
burst of up to 32 bits).
"""

import base64
import errno
import os

from sizeaware import digests as digests_mod

PREFIX = 'sizeaware_chunks'
VERSION = 'v1'
DEFAULT_ALGORITHM = 'crc32c'
#: What a longer (hashlib) digest is cut to.
DIGEST_BYTES = 8
MAX_VALUE = 255
#: Properties the digests may take, besides the header.
MAX_DIGEST_PROPERTIES = 32
MIN_CHUNK = 4 * 2**20


def new_hash(algorithm):
    """A hashlib-like object for a chunk digest algorithm
    (:func:`sizeaware.digests.new`); ValueError for an unknown one."""
    return digests_mod.new(algorithm)


def digest_bytes_for(algorithm):
    """Bytes of each chunk's digest kept in the manifest."""
    return min(DIGEST_BYTES, new_hash(algorithm).digest_size)


def per_property(digest_bytes):
    """Digests in one property: as many as fit in 255 base64 characters."""
    return (MAX_VALUE * 3 // 4) // digest_bytes


def max_chunks(algorithm=DEFAULT_ALGORITHM):
    """Chunks whose digests fit in :data:`MAX_DIGEST_PROPERTIES`."""
    return (per_property(digest_bytes_for(algorithm))
            * MAX_DIGEST_PROPERTIES)


def chunk_size_for(size, wanted=None, algorithm=DEFAULT_ALGORITHM):
    """The chunk size for an image of ``size`` bytes: ``wanted`` (or
    :data:`MIN_CHUNK`), doubled until the digests fit the properties."""
    chunk = wanted or MIN_CHUNK
    limit = max_chunks(algorithm)
    while -(-size // chunk) > limit:
        chunk *= 2
    return chunk


def chunk_count(size, chunk):
    return -(-size // chunk)


class Manifest:
    """The chunk layout and digests of one image."""

    def __init__(self, size, chunk_size, algorithm=DEFAULT_ALGORITHM,
                 digests=None, digest_bytes=None):
        self.size = size
        self.chunk_size = chunk_size
        self.algorithm = algorithm
        self.digest_bytes = digest_bytes or digest_bytes_for(algorithm)
        self.count = chunk_count(size, chunk_size)
        #: chunk index -> truncated digest (bytes)
        self.digests = dict(digests or {})

    def bounds(self, index):
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def index_of(self, offset):
        return offset // self.chunk_size

    def new_hash(self):
        return new_hash(self.algorithm)

    def truncate(self, full_digest):
        return full_digest[:self.digest_bytes]

    @property
    def complete(self):
        return len(self.digests) == self.count

    def to_properties(self):
        """The properties to record, a dict of strings."""
        if not self.complete:
            raise ValueError('digests of %d chunks missing'
                             % (self.count - len(self.digests)))
        props = {PREFIX: '%s %s %d %d %d' % (
            VERSION, self.algorithm, self.chunk_size, self.count,
            self.digest_bytes)}
        per = per_property(self.digest_bytes)
        ordered = [self.digests[i] for i in range(self.count)]
        for number, first in enumerate(range(0, self.count, per)):
            raw = b''.join(ordered[first:first + per])
            value = base64.urlsafe_b64encode(raw).rstrip(b'=').decode()
            props['%s_%02d' % (PREFIX, number)] = value
        return props

    @classmethod
    def from_properties(cls, properties, size):
        """The manifest recorded in an image's ``properties`` (the image
        record itself will do), or None when there is none. Raises
        ValueError when one is there but does not describe ``size``
        bytes or is damaged."""
        header = properties.get(PREFIX)
        if not header:
            return None
        try:
            version, algorithm, chunk, count, length = header.split()
            chunk, count, length = int(chunk), int(count), int(length)
        except ValueError:
            raise ValueError('malformed %s: %r' % (PREFIX, header)) from None
        if version != VERSION:
            raise ValueError('unknown manifest version %r' % version)
        if length <= 0 or length > new_hash(algorithm).digest_size:
            raise ValueError('%d-byte digests of %s' % (length, algorithm))
        if chunk <= 0 or count != chunk_count(size, chunk):
            raise ValueError('manifest of %d chunks of %d bytes does not '
                             'describe %d bytes' % (count, chunk, size))
        raw = b''
        for number in range(MAX_DIGEST_PROPERTIES + 1):
            value = properties.get('%s_%02d' % (PREFIX, number))
            if value is None:
                break
            raw += base64.urlsafe_b64decode(value + '=' * (-len(value) % 4))
        if len(raw) != count * length:
            raise ValueError('manifest holds %d digest bytes, not %d'
                             % (len(raw), count * length))
        digests = {i: raw[i * length:(i + 1) * length] for i in range(count)}
        return cls(size, chunk, algorithm, digests, length)


def footprint(size, chunk=None, algorithm=DEFAULT_ALGORITHM):
    """``(properties, characters)`` the manifest of a ``size``-byte image
    takes in Glance, header included."""
    chunk = chunk_size_for(size, chunk, algorithm)
    count = chunk_count(size, chunk)
    length = digest_bytes_for(algorithm)
    manifest = Manifest(size, chunk, algorithm, digests={
        i: b'\0' * length for i in range(count)})
    props = manifest.to_properties()
    return len(props), sum(len(k) + len(v) for k, v in props.items())


class ChunkHasher:
    """Digests the chunks of one span as its bytes pass, in order.

    :param offset: where the span's bytes start; when that is inside a
        chunk, ``read_at(start, length)`` supplies the chunk's bytes before
        it (from the local file: a span resumed mid-chunk).
    :param on_chunk: called with ``(index, truncated digest)`` for each
        chunk completed.
    """

    def __init__(self, manifest, offset, on_chunk, read_at=None):
        chunk_start = manifest.bounds(manifest.index_of(offset))[0]
        self._start(manifest, chunk_start, on_chunk)
        while self.offset < offset:
            data = read_at(self.offset, min(offset - self.offset, 1 << 20))
            if not data:
                raise ValueError('the local copy ends at %d' % self.offset)
            self.feed(data)

    def _start(self, manifest, offset, on_chunk):
        self.manifest = manifest
        self.offset = offset
        self._on_chunk = on_chunk
        self._hash = manifest.new_hash()
        self._index = manifest.index_of(offset)
        self._chunk_stop = manifest.bounds(self._index)[1]

    def feed(self, data):
        view = memoryview(data)
        while len(view):
            take = min(len(view), self._chunk_stop - self.offset)
            self._hash.update(view[:take])
            view = view[take:]
            self.offset += take
            if self.offset == self._chunk_stop:
                self._on_chunk(self._index,
                               self.manifest.truncate(self._hash.digest()))
                self._index += 1
                self._hash = self.manifest.new_hash()
                self._chunk_stop = self.manifest.bounds(self._index)[1]


#: Bytes :func:`matching_chunks` reads at a time.
SCAN_READ = 1 << 20


def matching_chunks(manifest, fd):
    """The indices of the chunks of the file open as ``fd`` whose bytes
    match their digests in ``manifest``: what of a partial download may be
    kept, whatever any other record says, since the data itself says so.

    A chunk past the file's end does not match. A chunk that lies wholly
    in a hole of a sparse file (``SEEK_DATA``) is zeros: it is compared
    with the digest of that many zero bytes, computed once, without being
    read. So the scan reads only the data the file holds: after a client
    was killed early, that is little; after it was killed late, that is
    the image so far, read back at page-cache or disk speed (CRC-32C
    itself runs at about 20 GiB/s).
    """
    size = os.fstat(fd).st_size
    buffer = memoryview(bytearray(SCAN_READ))
    zeros = {}  # chunk length -> digest of that many zero bytes
    good = set()
    for index in range(manifest.count):
        start, stop = manifest.bounds(index)
        if stop > size:
            break
        expected = manifest.digests.get(index)
        if expected is None:
            continue
        if _in_hole(fd, start, stop):
            if stop - start not in zeros:
                zeros[stop - start] = _zeros_digest(manifest, stop - start)
            digest = zeros[stop - start]
        else:
            digest = _file_digest(manifest, fd, start, stop, buffer)
        if digest == expected:
            good.add(index)
    return good


def _in_hole(fd, start, stop):
    """Whether ``[start, stop)`` of the file holds no data (a hole);
    False where the file system cannot tell."""
    try:
        return os.lseek(fd, start, os.SEEK_DATA) >= stop
    except OSError as exc:
        return exc.errno == errno.ENXIO  # no data from ``start`` on


def _zeros_digest(manifest, length):
    digest = manifest.new_hash()
    zeros = bytes(min(length, SCAN_READ))
    while length:
        digest.update(zeros[:length])
        length -= min(length, len(zeros))
    return manifest.truncate(digest.digest())


def _file_digest(manifest, fd, start, stop, buffer):
    digest = manifest.new_hash()
    position = start
    while position < stop:
        count = os.preadv(fd, [buffer[:stop - position]], position)
        if not count:
            return None
        digest.update(buffer[:count])
        position += count
    return manifest.truncate(digest.digest())
