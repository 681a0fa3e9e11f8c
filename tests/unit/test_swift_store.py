"""The ``sizeaware_swift`` driver's parts, against glance_store's own
segment readers; the whole upload is proven on a real Swift in
``tests/functional/test_swift_store.py``.

A recording connection stands in for swiftclient's: it reads the segment
as swiftclient does with a ``content_length`` (that many bytes, no more)
and records what was announced.
"""

import hashlib
import inspect
import io

from glance_store import exceptions
from glance_store._drivers.swift import buffered
from glance_store._drivers.swift import store as swift_store
import pytest

from sizeaware import opts
from sizeaware.store import swift

SEGMENT = 4_096_000
IMAGE = bytes(range(256)) * (SEGMENT * 4 // 256 + 100)  # 4 segments + 25 KiB


class RecordingConnection:
    def __init__(self):
        self.puts = []

    def put_object(self, container, obj, contents, content_length=None,
                   **kwargs):
        body = contents.read(content_length)
        self.puts.append((obj, content_length, len(body)))
        return 'etag'

    def head_object(self, container, obj):
        return {'name': obj}


def _segments(reader_class, image_size, body=None):
    """Segments written the way glance_store 5.x writes them: every one
    announced with the full segment size."""
    body = IMAGE[:image_size] if body is None else body
    image = swift._CountedImage(io.BytesIO(body), image_size)
    connection = swift._SegmentConnection(RecordingConnection())
    while True:
        reader = swift._sized_reader(
            reader_class, image, hashlib.md5(), hashlib.sha256(), SEGMENT)
        if reader.is_zero_size:
            break
        connection.put_object('c', 'seg-%d' % len(connection.puts),
                              reader, content_length=SEGMENT)
    return connection.puts


@pytest.mark.parametrize('reader_class', [swift_store.ChunkReader],
                         ids=['chunk-reader'])
def test_every_segment_announces_its_true_length(reader_class):
    puts = _segments(reader_class, len(IMAGE))
    assert [announced for _, announced, _ in puts] == [SEGMENT] * 4 + [
        len(IMAGE) - 4 * SEGMENT]
    assert all(announced == read for _, announced, read in puts)


def test_exact_multiple_of_the_segment_is_untouched():
    puts = _segments(swift_store.ChunkReader, 4 * SEGMENT)
    assert [announced for _, announced, _ in puts] == [SEGMENT] * 4


def test_unknown_size_and_other_objects_pass_through():
    recording = RecordingConnection()
    connection = swift._SegmentConnection(recording)
    connection.put_object('c', 'manifest', io.BytesIO(b''),
                          content_length=0)
    connection.put_object('c', 'whole', io.BytesIO(b'abc'))
    assert recording.puts == [('manifest', 0, 0), ('whole', None, 3)]
    assert connection.head_object('c', 'x') == {'name': 'x'}


def test_glance_store_interfaces_this_driver_relies_on():
    """A glance_store upgrade that moves any of these fails here, loudly,
    rather than letting the driver quietly stop correcting lengths."""
    for cls in (swift_store.SingleTenantStore, swift_store.MultiTenantStore):
        manager = inspect.signature(cls.get_manager)
        assert 'store_location' in manager.parameters
    assert 'reader_class' in inspect.getsource(swift_store.BaseStore.configure)
    for reader in (swift_store.ChunkReader, buffered.BufferedReader):
        assert list(inspect.signature(reader).parameters)[:4] == [
            'fd', 'checksum', 'os_hash_value', 'total']
    assert 'total' in inspect.getsource(swift_store.ChunkReader.__init__)


def test_driver_classes_keep_the_stock_locations_and_claim_their_name():
    assert swift.StoreLocation is swift_store.StoreLocation
    # The stock driver's options, then the read options of every
    # sizeaware driver.
    assert swift.Store.OPTIONS == (swift_store.Store.OPTIONS
                                   + opts.store_read_opts)
    for ours, stock in swift._OURS.items():
        assert issubclass(stock, ours)


@pytest.mark.parametrize('delta, words', [(-1, 'Size exceeds'),
                                          (+1, 'Size mismatch')])
def test_an_image_not_of_its_size_is_invalid_not_cut(delta, words):
    """Without the size filter in front, a body longer than its declared
    size must not lose its tail to the shortened announcement, and a
    shorter one must fail at once rather than leave Swift waiting."""
    with pytest.raises(exceptions.Invalid, match=words):
        _segments(swift_store.ChunkReader, len(IMAGE) + delta, body=IMAGE)
