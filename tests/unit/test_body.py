import io
import os

import pytest

from sizeaware import body
from sizeaware import exceptions
from tests.unit import fakes

DATA = os.urandom(200_000) + b'\nline two\nthree'


def _drain(reader, how):
    if how == 'line':
        return b''.join(iter(reader.readline, b''))
    if how == 'iter':
        return b''.join(reader)
    if how == 'all':
        return reader.read()
    if how == 'into':
        out = bytearray()
        buffer = bytearray(4099)
        while True:
            count = reader.readinto(buffer)
            if not count:
                return bytes(out)
            out += buffer[:count]
    out = []
    while True:
        piece = reader.read(how)
        if not piece:
            return b''.join(out)
        out.append(piece)


HOWS = [1, 7, 65536, 'line', 'iter', 'all', 'into']


def _stream_reader(data, declared, delimited=False):
    return body.SizedBodyReader(io.BytesIO(data).read, declared, delimited)


def _chunk_reader(data, declared, size=50_000):
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    return body.SizedBodyReader(fakes.ChunkSource(chunks), declared,
                                delimited=False)


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
@pytest.mark.parametrize('make', READERS)
def test_one_byte_over_raises_and_delivers_nothing_past_declared(make, how):
    declared = len(DATA) - 1
    reader = make(DATA, declared)
    delivered = bytearray()
    with pytest.raises(exceptions.BodyTooLong) as info:
        if isinstance(how, int):
            while piece := reader.read(how):
                delivered += piece
        else:
            _drain(reader, how)
    assert len(delivered) <= declared
    assert reader.error is info.value
    assert 'more than %d' % declared in str(info.value)


@pytest.mark.parametrize('how', HOWS)
@pytest.mark.parametrize('make', READERS)
def test_one_byte_short_raises(make, how):
    reader = make(DATA[:-1], len(DATA))
    with pytest.raises(exceptions.BodyTooShort) as info:
        _drain(reader, how)
    assert info.value.received == len(DATA) - 1
    assert 'declared %d bytes, received %d bytes' % (
        len(DATA), len(DATA) - 1) in str(info.value)


def test_error_is_sticky():
    reader = _stream_reader(b'abc', 5)
    with pytest.raises(exceptions.BodyTooShort):
        reader.read()
    with pytest.raises(exceptions.BodyTooShort):
        reader.read(1)
    with pytest.raises(exceptions.BodyTooShort):
        reader.readline()


def test_delimited_body_is_not_read_past_its_end():
    source = fakes.ChunkSource([b'abc'], fail_with=AssertionError('read'))
    reader = body.SizedBodyReader(source, 3, delimited=True)
    assert reader.read(10) == b'abc'
    assert reader.read(10) == b''
    assert source.pulls == 1


def test_undelimited_body_is_proven_to_end_once():
    source = fakes.ChunkSource([b'abc'])
    reader = body.SizedBodyReader(source, 3, delimited=False)
    assert reader.read(3) == b'abc'
    assert source.pulls == 2
    assert reader.read(3) == b''
    assert reader.read(3) == b''
    assert source.pulls == 2


def test_reads_never_ask_the_stream_past_the_declared_size():
    asked = []
    stream = io.BytesIO(b'x' * 100)

    def pull(hint):
        asked.append(hint)
        return stream.read(hint)

    reader = body.SizedBodyReader(pull, 10, delimited=False)
    with pytest.raises(exceptions.BodyTooLong):
        reader.read(1000)
    assert asked == [10, 1]


def test_whole_chunks_are_handed_on_without_copying():
    chunks = [os.urandom(1000), os.urandom(1000)]
    reader = body.SizedBodyReader(fakes.ChunkSource(list(chunks)), 2000,
                                  delimited=False)
    assert reader.read(1000) is chunks[0]
    assert reader.read(5000) is chunks[1]


def test_reads_span_chunks_so_only_the_end_is_short():
    reader = body.SizedBodyReader(
        fakes.ChunkSource([b'ab', b'cd', b'ef']), 6, delimited=False)
    assert reader.read(5) == b'abcde'
    assert reader.read(5) == b'f'


def test_chunk_past_the_declared_size_fails_before_delivering():
    reader = body.SizedBodyReader(fakes.ChunkSource([b'abcdef']), 4,
                                  delimited=False)
    with pytest.raises(exceptions.BodyTooLong):
        reader.read(100)
    assert reader.received == 4


def test_disconnect_is_a_client_error_with_the_count():
    source = fakes.ChunkSource([b'abc'], fail_with=OSError('reset by peer'))
    reader = body.SizedBodyReader(source, 10, delimited=True)
    assert reader.read(3) == b'abc'
    with pytest.raises(exceptions.ClientDisconnected) as info:
        reader.read(3)
    assert info.value.received == 3
    assert 'reset by peer' in str(info.value)
    assert exceptions.http_error(info.value).code == 400


def test_zero_declared_empty_and_non_empty():
    assert body.SizedBodyReader(fakes.ChunkSource([]), 0, False).read() == b''
    with pytest.raises(exceptions.BodyTooLong):
        body.SizedBodyReader(fakes.ChunkSource([b'x']), 0, False).read(1)


def test_readline_with_limit_across_chunks():
    reader = body.SizedBodyReader(fakes.ChunkSource([b'ab', b'cd\nef']), 7,
                                  delimited=False)
    assert reader.readline(3) == b'abc'
    assert reader.readline() == b'd\n'
    assert reader.readline() == b'ef'
    assert reader.readline() == b''


def test_open_body_refuses_chunked_without_termination():
    with pytest.raises(exceptions.UnsupportedFraming):
        body.open_body({'wsgi.input': io.BytesIO()}, 3, chunked=True)
