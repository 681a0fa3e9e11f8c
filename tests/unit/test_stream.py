import array
import errno
import io
import os
import traceback

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from sizeaware import exceptions
from sizeaware import framing
from sizeaware import stream
from tests.unit import fakes

DATA = os.urandom(200_000) + b'\nline two\nthree'


def _drain(reader, how, delivered=None):
    """Read ``reader`` to its end the ``how`` way and return the bytes;
    each piece also goes into ``delivered`` as it comes, so a test sees
    what arrived before an error."""
    delivered = bytearray() if delivered is None else delivered
    for piece in _pieces(reader, how):
        delivered += piece
    return bytes(delivered)


def _pieces(reader, how):
    if how == 'line':
        yield from iter(reader.readline, b'')
    elif how == 'iter':
        yield from reader
    elif how == 'all':
        yield from iter(reader.read, b'')
    elif how == 'into':
        buffer = bytearray(4099)
        while count := reader.readinto(buffer):
            yield bytes(buffer[:count])
    else:
        yield from iter(lambda: reader.read(how), b'')


HOWS = [1, 7, 65536, 'line', 'iter', 'all', 'into']


def _stream_reader(data, expected, delimited=False):
    return stream.BodyStream(io.BytesIO(data).read, expected, delimited)


def _chunk_reader(data, expected, size=50_000):
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    return stream.BodyStream(fakes.ChunkSource(chunks), expected)


READERS = [_stream_reader, _chunk_reader]


@pytest.mark.parametrize('how', HOWS)
@pytest.mark.parametrize('make', READERS)
def test_exact_body_is_delivered_whole(make, how):
    reader = make(DATA, len(DATA))
    assert _drain(reader, how) == DATA
    assert reader.received == len(DATA)
    assert reader.error is None
    assert reader.read(10) == b''


@pytest.mark.parametrize('how', HOWS)
def test_unknown_length_reads_to_the_end_of_the_source(how):
    reader = _chunk_reader(DATA, None)
    assert _drain(reader, how) == DATA
    assert reader.received == len(DATA)


@pytest.mark.parametrize('how', HOWS)
@pytest.mark.parametrize('make', READERS)
def test_one_byte_short_raises(make, how):
    reader = make(DATA[:-1], len(DATA))
    with pytest.raises(exceptions.BodyTooShort) as info:
        _drain(reader, how)
    assert info.value.received == len(DATA) - 1
    assert 'declared %d bytes, received %d bytes' % (
        len(DATA), len(DATA) - 1) in str(info.value)


@pytest.mark.parametrize('how', HOWS)
@pytest.mark.parametrize('make', READERS)
def test_one_byte_long_raises_before_the_last_byte_goes_out(make, how):
    expected = len(DATA) - 1
    reader = make(DATA, expected)
    delivered = bytearray()
    with pytest.raises(exceptions.BodyTooLong) as info:
        _drain(reader, how, delivered)
    assert bytes(delivered) == DATA[:len(delivered)]
    assert len(delivered) < expected
    assert reader.received == len(delivered)
    assert reader.error is info.value
    assert 'more than %d' % expected in str(info.value)


def test_length_framed_source_ending_early_is_a_disconnect():
    reader = _stream_reader(DATA[:10], len(DATA), delimited=True)
    assert reader.read() == DATA[:10]
    with pytest.raises(exceptions.ClientDisconnected) as info:
        reader.read()
    assert info.value.received == 10


def test_error_is_sticky_also_for_empty_reads():
    reader = _chunk_reader(b'abc', 5)
    assert reader.read() == b'abc'
    with pytest.raises(exceptions.BodyTooShort) as first:
        reader.read()
    for call in (lambda: reader.read(1), lambda: reader.read(0),
                 lambda: reader.readline(0), reader.readline,
                 lambda: reader.readinto(bytearray(0))):
        with pytest.raises(exceptions.BodyTooShort) as again:
            call()
        assert again.value is first.value


def test_re_raising_does_not_grow_the_traceback():
    reader = _chunk_reader(b'abc', 5)
    depths = []
    for _ in range(5):
        try:
            reader.read(10)
        except exceptions.BodyTooShort as exc:
            depths.append(len(traceback.extract_tb(exc.__traceback__)))
    assert len(set(depths[1:])) == 1


def test_close_releases_and_later_reads_fail():
    source = fakes.ChunkSource([b'abcdef'])
    reader = stream.BodyStream(source, 6)
    assert reader.read(2) == b'ab'
    reader.close()
    assert reader._chunk == b'' and reader._pull is None
    with pytest.raises(ValueError):
        reader.read(1)
    with pytest.raises(ValueError):
        reader.readinto(bytearray(1))


def test_delimited_body_is_not_read_past_its_end():
    source = fakes.ChunkSource([b'abc'], fail_with=AssertionError('read'))
    reader = stream.BodyStream(source, 3, delimited=True)
    assert reader.read(10) == b'abc'
    assert reader.read(10) == b''
    assert source.pulls == 1


def test_undelimited_body_is_proven_to_end_once():
    source = fakes.ChunkSource([b'abc'])
    reader = stream.BodyStream(source, 3)
    assert reader.read(3) == b'abc'
    assert source.pulls == 2
    assert reader.read(3) == b''
    assert reader.read(3) == b''
    assert source.pulls == 2


def test_reads_never_ask_the_source_past_the_expected_length():
    asked = []
    source = io.BytesIO(b'x' * 100)

    def pull(hint):
        asked.append(hint)
        return source.read(hint)

    reader = stream.BodyStream(pull, 10)
    with pytest.raises(exceptions.BodyTooLong):
        reader.read(1000)
    assert asked == [10, 1]


def test_whole_chunks_are_handed_on_without_copying():
    chunks = [os.urandom(1000), os.urandom(1000)]
    reader = stream.BodyStream(fakes.ChunkSource(list(chunks)), 2000)
    assert reader.read(1000) is chunks[0]
    assert reader.read(5000) is chunks[1]


def test_reads_span_chunks_so_only_the_end_is_short():
    reader = stream.BodyStream(fakes.ChunkSource([b'ab', b'cd', b'ef']), 6)
    assert reader.read(5) == b'abcde'
    assert reader.read(5) == b'f'


def test_read1_hands_on_each_piece_as_it_came():
    chunks = [os.urandom(700), os.urandom(3000), os.urandom(5)]
    reader = stream.BodyStream(fakes.ChunkSource(list(chunks)), 3705)
    pieces = [reader.read1() for _ in range(3)]
    assert all(a is b for a, b in zip(pieces, chunks))
    assert reader.read1() == b''


def test_read1_takes_at_most_one_piece_and_at_most_size():
    reader = stream.BodyStream(fakes.ChunkSource([b'abcdef', b'gh']), 8)
    assert reader.read1(4) == b'abcd'
    assert reader.read1(100) == b'ef'
    assert reader.read1(100) == b'gh'
    assert reader.read1(100) == b''


def test_read1_proves_the_end_before_the_last_piece():
    reader = stream.BodyStream(fakes.ChunkSource([b'abcd', b'ef', b'x']), 6)
    assert reader.read1() == b'abcd'
    with pytest.raises(exceptions.BodyTooLong):
        reader.read1()
    assert reader.received == 4


def test_chunk_past_the_expected_length_fails_before_delivering():
    reader = stream.BodyStream(fakes.ChunkSource([b'abcdef']), 4)
    with pytest.raises(exceptions.BodyTooLong):
        reader.read(100)
    assert reader.received == 0


@pytest.mark.parametrize('exc, error, status', [
    (ConnectionResetError(errno.ECONNRESET, 'reset by peer'),
     exceptions.ClientDisconnected, 499),
    (OSError('unexpected end of file while parsing chunked data'),
     exceptions.ClientDisconnected, 499),
    (TimeoutError('timed out'), exceptions.ClientTimeout, 408),
])
def test_broken_source_outcomes_keep_the_count(exc, error, status):
    source = fakes.ChunkSource([b'abc'], fail_with=exc)
    reader = stream.BodyStream(source, 10, delimited=True)
    assert reader.read(3) == b'abc'
    with pytest.raises(error) as info:
        reader.read(3)
    assert info.value.received == 3
    assert str(exc) in str(info.value)
    assert exceptions.http_error(info.value).code == status


def test_zero_expected_empty_and_non_empty():
    assert stream.BodyStream(fakes.ChunkSource([]), 0).read() == b''
    with pytest.raises(exceptions.BodyTooLong):
        stream.BodyStream(fakes.ChunkSource([b'x']), 0).read(0)


def test_readline_with_limit_across_chunks():
    reader = stream.BodyStream(fakes.ChunkSource([b'ab', b'cd\nef']), 7)
    assert reader.readline(3) == b'abc'
    assert reader.readline() == b'd\n'
    assert reader.readline() == b'ef'
    assert reader.readline() == b''


@pytest.mark.parametrize('make_buffer', [
    lambda: array.array('I', [0] * 3),
    lambda: memoryview(bytearray(12)).cast('H'),
    lambda: array.array('d', [0.0]),
], ids=['array-I', 'memoryview-H', 'array-d'])
def test_readinto_fills_any_writable_buffer_by_bytes(make_buffer):
    data = bytes(range(40))
    reader = stream.BodyStream(fakes.ChunkSource([data[:5], data[5:]]), 40)
    out = bytearray()
    while True:
        buffer = make_buffer()
        count = reader.readinto(buffer)
        if not count:
            break
        out += memoryview(buffer).cast('B')[:count]
    assert bytes(out) == data


def test_readinto_a_read_only_buffer_consumes_nothing():
    reader = stream.BodyStream(fakes.ChunkSource([b'abcdef']), 6)
    with pytest.raises(TypeError):
        reader.readinto(b'123')
    assert reader.received == 0
    assert reader.read() == b'abcdef'


class _Recording(stream.BodyStream):
    """The hook as a subclass uses it: count, digest or spool."""

    def __init__(self, *args, refuse_first=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.pieces = []
        self.refuse_first = refuse_first

    def chunk_update(self, data):
        if self.refuse_first:
            self.refuse_first = False
            raise OSError('spool full')
        self.pieces.append(bytes(data))


@pytest.mark.parametrize('how', HOWS)
def test_the_hook_sees_every_delivered_byte_once_in_order(how):
    chunks = [DATA[i:i + 7000] for i in range(0, len(DATA), 7000)]
    reader = _Recording(fakes.ChunkSource(chunks), len(DATA))
    assert _drain(reader, how) == DATA
    assert b''.join(reader.pieces) == DATA


@pytest.mark.parametrize('how', [7, 'into', 'line'])
def test_a_refusing_hook_consumes_nothing(how):
    reader = _Recording(fakes.ChunkSource([b'ab\ncd', b'ef']), 7,
                        refuse_first=True)
    with pytest.raises(OSError, match='spool full'):
        _drain(reader, how)
    assert reader.received == 0 and reader.error is None
    assert _drain(reader, how) == b'ab\ncdef'
    assert b''.join(reader.pieces) == b'ab\ncdef'


def test_open_body_refuses_chunked_on_a_server_that_cannot_end_it():
    with pytest.raises(exceptions.UnsupportedFraming):
        framing.open_body({'wsgi.input': io.BytesIO()}, 3, chunked=True)


# -- the property: any chunking, any mix of reads -------------------------

_OPS = st.one_of(
    st.tuples(st.just('read'), st.integers(-1, 300)),
    st.tuples(st.just('readinto'), st.integers(0, 300)),
    st.tuples(st.just('readline'), st.integers(-1, 300)),
)


def _apply(reader, op, size):
    if op == 'read':
        return reader.read(size)
    if op == 'readline':
        return reader.readline(size)
    buffer = bytearray(size)
    return bytes(buffer[:reader.readinto(buffer)])


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=1500).map(lambda b: b.replace(b'', b'')),
       newlines=st.lists(st.integers(0, 1499), max_size=10),
       cuts=st.lists(st.integers(1, 1500), max_size=12),
       outcome=st.sampled_from(['exact', 'short', 'long', 'disconnect',
                                'timeout']),
       delta=st.integers(1, 300),
       ops=st.lists(_OPS, min_size=1, max_size=8))
def test_any_chunking_and_reads_deliver_a_prefix_and_the_right_outcome(
        body, newlines, cuts, outcome, delta, ops):
    body = bytearray(body)
    for i in newlines:
        if i < len(body):
            body[i] = 10
    body = bytes(body)
    if outcome == 'exact':
        expected = len(body)
    elif outcome == 'long':
        expected = max(0, len(body) - delta)
        if expected == len(body):
            return
    else:
        expected = len(body) + delta
    bounds = sorted({c for c in cuts if c < len(body)} | {0, len(body)})
    chunks = [body[a:b] for a, b in zip(bounds, bounds[1:])]
    fail_with = {'disconnect': ConnectionResetError(errno.ECONNRESET, 'rst'),
                 'timeout': TimeoutError('timed out')}.get(outcome)
    reader = stream.BodyStream(fakes.ChunkSource(chunks, fail_with),
                               expected)
    delivered = bytearray()
    error = None
    try:
        # The mix of reads, over and over, then one read() to the end.
        for step in range(4 * len(body) + 10):
            op, size = ops[step % len(ops)]
            piece = _apply(reader, op, size)
            delivered += piece
            if not piece and size != 0:
                break
        while piece := reader.read():
            delivered += piece
    except exceptions.SizeawareError as exc:
        error = exc
    assert bytes(delivered) == body[:len(delivered)]
    assert reader.received == len(delivered)
    if outcome == 'exact':
        assert error is None and bytes(delivered) == body
        return
    assert error is reader.error
    if outcome == 'long':
        assert isinstance(error, exceptions.BodyTooLong)
        assert len(delivered) < expected or expected == 0
        return
    assert bytes(delivered) == body
    assert isinstance(error, {
        'short': exceptions.BodyTooShort,
        'disconnect': exceptions.ClientDisconnected,
        'timeout': exceptions.ClientTimeout}[outcome])
    assert error.received == len(body)


def test_an_error_not_of_the_connection_after_pieces_is_kept_not_an_end():
    """A pull that fails with something else than an OSError (a store
    driver's own error, a refusal) after a read already took pieces: the
    read returns those pieces, and the next one raises that error, never a
    short end of the body."""
    calls = []

    def pull(hint):
        calls.append(hint)
        if len(calls) == 1:
            return b'abc'
        if len(calls) == 2:
            raise RuntimeError('the store went away')
        return b''
    body = stream.BodyStream(pull)
    assert body.read(10) == b'abc'
    with pytest.raises(RuntimeError, match='store went away'):
        body.read(10)
    with pytest.raises(RuntimeError):
        body.read(10)
    assert len(calls) == 2
