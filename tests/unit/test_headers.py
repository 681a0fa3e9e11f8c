import string

from hypothesis import given
from hypothesis import strategies as st
import pytest

from sizeaware import exceptions
from sizeaware import headers


@pytest.mark.parametrize('value, expected', [
    ('0', 0), ('5', 5), (' 5 ', 5), ('\t42\t', 42), ('0005', 5),
    ('9' * 20, int('9' * 20)),
])
def test_valid_sizes(value, expected):
    assert headers.parse_byte_count('X', value) == expected


@pytest.mark.parametrize('value, reason', [
    ('', 'empty'), ('  ', 'empty'), ('+5', 'ASCII digits'),
    ('-1', 'ASCII digits'), ('5_000', 'ASCII digits'), ('1e3', 'ASCII'),
    ('0x10', 'ASCII'), ('\u0661\u0662', 'ASCII'), ('5, 5', 'more than once'),
    ('1' * 21, 'more than 20 digits'), ('1' * 26, 'more than 20 digits'),
    ('5 5', 'ASCII digits'), ('5\n', 'ASCII digits'), ('5.0', 'ASCII'),
])
def test_invalid_sizes_name_the_header_and_reason(value, reason):
    with pytest.raises(exceptions.MalformedHeader) as info:
        headers.parse_byte_count(headers.IMAGE_SIZE_HEADER, value)
    message = str(info.value)
    assert headers.IMAGE_SIZE_HEADER in message
    assert reason in message


def test_quoting_truncates_and_escapes():
    message = str(pytest.raises(
        exceptions.MalformedHeader, headers.parse_byte_count, 'X',
        '\x00<script>' + 'a' * 100).value)
    assert '\x00' not in message
    assert '\\x00' in message
    assert 'a' * 50 not in message


def _canonical(value):
    stripped = value.strip(' \t')
    if (1 <= len(stripped) <= 20 and
            all(c in string.digits for c in stripped)):
        return int(stripped)
    return None


@given(st.text())
def test_any_text_parses_to_canonical_int_or_raises_400_error(value):
    expected = _canonical(value)
    try:
        result = headers.parse_byte_count(headers.IMAGE_SIZE_HEADER, value)
    except exceptions.MalformedHeader as error:
        assert expected is None
        assert exceptions.http_error(error).code == 400
    else:
        assert type(result) is int
        assert result == expected


@given(st.integers(min_value=0, max_value=10 ** 20 - 1),
       st.text(alphabet=' \t', max_size=3), st.text(alphabet=' \t',
                                                    max_size=3))
def test_every_byte_count_round_trips(number, before, after):
    assert headers.parse_byte_count('X', before + str(number) + after) == \
        number


def test_chunked_detection():
    assert headers.is_chunked({'HTTP_TRANSFER_ENCODING': 'chunked'})
    assert headers.is_chunked({'HTTP_TRANSFER_ENCODING': ' Chunked '})
    assert not headers.is_chunked({})
    with pytest.raises(exceptions.UnsupportedTransferCoding):
        headers.is_chunked({'HTTP_TRANSFER_ENCODING': 'gzip, chunked'})


def test_empty_content_length_means_absent():
    assert headers.content_length({'CONTENT_LENGTH': ''}) is None
    assert headers.content_length({}) is None
    assert headers.content_length({'CONTENT_LENGTH': '12'}) == 12
    with pytest.raises(exceptions.MalformedHeader):
        headers.content_length({'CONTENT_LENGTH': '1_2'})


@pytest.mark.parametrize('value, expected', [
    ('bytes 0-0/1', (0, 0, 1)),
    ('bytes 5-9/10', (5, 9, 10)),
    (' BYTES 0-4/5\t', (0, 4, 5)),
    ('bytes 00-04/005', (0, 4, 5)),
])
def test_content_range(value, expected):
    assert headers.content_range({'HTTP_CONTENT_RANGE': value}) == expected


@pytest.mark.parametrize('value', [
    '', 'bytes', 'bytes */10', 'bytes 0-4/*', 'bytes 0-4', 'bytes=0-4/5',
    'bytes  0-4/5', 'bytes +0-4/5', 'bytes 0-4/5_0', 'bytes 0-4/5, 0-4/5',
    'items 0-4/5', 'bytes 0x0-4/5', 'bytes 0-%s/5' % ('9' * 21),
    'bytes \u0661-4/5',
])
def test_malformed_content_range_is_400(value):
    with pytest.raises(exceptions.MalformedHeader) as info:
        headers.content_range({'HTTP_CONTENT_RANGE': value})
    assert 'Content-Range' in str(info.value)
    assert exceptions.http_error(info.value).status_int == 400


@pytest.mark.parametrize('value', ['bytes 5-4/10', 'bytes 0-10/10',
                                   'bytes 10-10/10', 'bytes 0-0/0'])
def test_unsatisfiable_content_range_is_416_with_the_size(value):
    with pytest.raises(exceptions.RangeNotSatisfiable) as info:
        headers.content_range({'HTTP_CONTENT_RANGE': value})
    response = exceptions.http_error(info.value)
    assert response.status_int == 416
    assert response.headers['Content-Range'] == 'bytes */%s' % (
        value.rsplit('/', 1)[1])


def test_no_content_range():
    assert headers.content_range({}) is None


def test_image_sha256():
    digest = 'AB' * 32
    assert headers.image_sha256({'HTTP_X_IMAGE_SHA256': digest}) == (
        digest.lower())
    assert headers.image_sha256({}) is None
    for bad in ('ab' * 31, 'zz' * 32, '', 'sha256:' + 'ab' * 32):
        with pytest.raises(exceptions.MalformedHeader):
            headers.image_sha256({'HTTP_X_IMAGE_SHA256': bad})
