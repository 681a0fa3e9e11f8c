"""Reading the headers that say how big an upload is.

Python's ``int()`` accepts far more than HTTP does (``+5``, ``5_000``,
``١٢``), so every byte count is checked against one strict grammar here
before it is trusted. The functions take the raw WSGI environ values and
raise :mod:`sizeaware.exceptions` errors whose text a client can act on.
"""

import base64
import re

from sizeaware import digests
from sizeaware import exceptions

IMAGE_SIZE_HEADER = 'X-OpenStack-Image-Size'
IMAGE_SIZE_ENVIRON = 'HTTP_X_OPENSTACK_IMAGE_SIZE'

#: Optional blanks, 1 to 20 ASCII digits, optional blanks. Twenty digits
#: hold any 64-bit size; anything longer is not a size but an attack or a bug.
_BYTE_COUNT = re.compile(r'[ \t]*([0-9]{1,20})[ \t]*')
_MAX_DIGITS = 20
_QUOTE_LIMIT = 40


def quote(value, limit=_QUOTE_LIMIT):
    """``value`` made safe for a message or a log line: printable ASCII,
    quoted (a newline cannot forge a line), truncated to ``limit``
    characters unless ``limit`` is None."""
    if limit is not None and len(value) > limit:
        return ascii(value[:limit]) + '...'
    return ascii(value)


def parse_byte_count(name, value):
    """The integer that header ``name``'s ``value`` states, or an error.

    :raises sizeaware.exceptions.MalformedHeader: with the reason, for any
        value outside the grammar.
    """
    match = _BYTE_COUNT.fullmatch(value)
    if match is not None:
        return int(match.group(1))
    raise exceptions.MalformedHeader(
        'Invalid %s header %s: %s.' % (name, quote(value), _reason(value)))


def _reason(value):
    stripped = value.strip(' \t')
    if not stripped:
        return 'the value is empty'
    if ',' in stripped:
        return 'the header was given more than once'
    if stripped.isascii() and stripped.isdigit():
        return 'more than %d digits' % _MAX_DIGITS
    return 'expected a byte count of ASCII digits only'


def image_size(environ):
    """The declared image size, or None when the header is absent."""
    value = environ.get(IMAGE_SIZE_ENVIRON)
    if value is None:
        return None
    return parse_byte_count(IMAGE_SIZE_HEADER, value)


def content_length(environ):
    """The request's Content-Length, or None when absent or empty.

    Some WSGI servers put an empty string in ``CONTENT_LENGTH`` for a
    request without one; that means absent.
    """
    value = environ.get('CONTENT_LENGTH')
    if value is None or value == '':
        return None
    return parse_byte_count('Content-Length', value)


def is_chunked(environ):
    """Whether the body is framed by chunked transfer coding.

    :raises sizeaware.exceptions.UnsupportedTransferCoding: for any
        transfer coding other than plain ``chunked``: with another coding
        layered on top the bytes received are not the image's bytes.
    """
    value = environ.get('HTTP_TRANSFER_ENCODING')
    if value is None:
        return False
    if value.strip(' \t').lower() == 'chunked':
        return True
    raise exceptions.UnsupportedTransferCoding(
        'Unsupported Transfer-Encoding %s: only "chunked" is accepted for '
        'image data.' % quote(value))


def has_content_range(environ):
    return 'HTTP_CONTENT_RANGE' in environ


#: ``bytes a-b/N`` (RFC 9110 section 14.4), each number a byte count of the
#: grammar above; the unit is case-insensitive, as range units are. The
#: unsatisfied form ``bytes */N`` and an unknown total ``/*`` say nothing a
#: write can use and are malformed here.
_CONTENT_RANGE = re.compile(
    r'[ \t]*[Bb][Yy][Tt][Ee][Ss] ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20})'
    r'[ \t]*')


def content_range(environ):
    """``(first, last, total)`` of the request's ``Content-Range``, or None
    when it has none. ``last`` is inclusive, as in the header.

    :raises sizeaware.exceptions.MalformedHeader: for a value outside the
        grammar.
    :raises sizeaware.exceptions.RangeNotSatisfiable: for a range that is
        backwards or ends at or past its total.
    """
    value = environ.get('HTTP_CONTENT_RANGE')
    if value is None:
        return None
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        raise exceptions.MalformedHeader(
            'Invalid Content-Range header %s: expected "bytes '
            'first-last/size" with ASCII digits only.' % quote(value))
    first, last, total = (int(g) for g in match.groups())
    if first > last:
        raise exceptions.RangeNotSatisfiable(
            'Content-Range %s is backwards: its first byte comes after its '
            'last.' % quote(value), total)
    if last >= total:
        raise exceptions.RangeNotSatisfiable(
            'Content-Range %s ends past the image: its last byte must be '
            'below the size %d.' % (quote(value), total), total)
    return first, last, total


#: A whole-image sha256 a client may declare when a transfer session is
#: created, checked at finalize.
IMAGE_SHA256_HEADER = 'X-Image-Sha256'
_SHA256 = re.compile(r'[ \t]*([0-9a-fA-F]{64})[ \t]*')


def image_sha256(environ):
    """The declared sha256 as 64 lower-case hex digits, or None."""
    value = environ.get('HTTP_X_IMAGE_SHA256')
    if value is None:
        return None
    match = _SHA256.fullmatch(value)
    if match is None:
        raise exceptions.MalformedHeader(
            'Invalid %s header %s: expected 64 hexadecimal digits.'
            % (IMAGE_SHA256_HEADER, quote(value)))
    return match.group(1).lower()


#: RFC 9530 digest algorithms a body may be checked with, strongest first.
CONTENT_DIGEST_ALGORITHMS = ('sha-512', 'sha-256', 'crc32c')
#: One member of the ``Content-Digest`` dictionary: a key and a byte
#: sequence (RFC 8941 section 3.3.5).
_DIGEST_MEMBER = re.compile(
    r'[ \t]*([a-z][a-z0-9_.*-]*)=:([A-Za-z0-9+/]*={0,2}):[ \t]*')


def content_digest(environ):
    """``(algorithm, digest bytes)`` of the request's RFC 9530
    ``Content-Digest``, the strongest algorithm :data:`CONTENT_DIGEST_
    ALGORITHMS` names; None without one. Algorithms not known are
    ignored, as the RFC asks.

    :raises sizeaware.exceptions.MalformedHeader: for a value that is not
        a dictionary of byte sequences, or a digest of the wrong length.
    """
    value = environ.get('HTTP_CONTENT_DIGEST')
    if value is None:
        return None
    found = {}
    for member in value.split(','):
        match = _DIGEST_MEMBER.fullmatch(member)
        if match is None:
            raise exceptions.MalformedHeader(
                'Invalid Content-Digest header %s: expected '
                '"<algorithm>=:<base64>:" members (RFC 9530).' % quote(value))
        try:
            found[match.group(1)] = base64.b64decode(match.group(2),
                                                     validate=True)
        except ValueError:
            raise exceptions.MalformedHeader(
                'Invalid Content-Digest header %s: not base64.'
                % quote(value)) from None
    for algorithm in CONTENT_DIGEST_ALGORITHMS:
        if algorithm in found:
            digest = found[algorithm]
            if len(digest) != digests.new(algorithm).digest_size:
                raise exceptions.MalformedHeader(
                    'Invalid Content-Digest header %s: a %s digest is %d '
                    'bytes.' % (quote(value), algorithm,
                                digests.new(algorithm).digest_size))
            return algorithm, digest
    return None
