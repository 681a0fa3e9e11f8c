"""What an image download is, and what a request's conditions and range
make of it (RFC 9110 sections 13 and 14).

An active image's data never changes: its validator is the checksum
Glance recorded when the data went in, ``os_hash_value`` (or, for an image
without one, the MD5 ``checksum``), sent as a strong entity tag. The
decision is taken on the image record alone, before Glance sees the
request:

* ``If-Match`` that does not match: 412 (strong comparison; ``*`` matches
  any active image);
* ``If-None-Match`` that matches: 304 (weak comparison);
* a ``Range`` on an image whose store cannot read at an offset, on an
  empty image, or with an ``If-Range`` that does not match (a date never
  matches, for the image has no ``Last-Modified``): the whole image, 200;
* several ranges: the whole image, 200 (a multipart answer would have to
  be built from as many reads of the store, and the clients that resume or
  split a download ask for one range per request);
* a range that webob cannot read (inverted, malformed, another unit):
  ignored, the whole image, 200, as RFC 9110 section 14.2 says;
* a range that lies wholly past the image, and ``bytes=-0``: 416 with
  ``Content-Range: bytes */N``;
* any other range: that range, its end clamped to the image, a suffix
  longer than the image made the whole image, asked of Glance in its
  plain ``bytes=first-last`` form.

Ranges are read by :mod:`webob.byterange`, never by hand; the one form
webob reads differently from RFC 9110 (``bytes=-0``, which it takes for
``bytes=0-``) is told apart here.
"""

import dataclasses
import re
import typing

from webob import byterange
from webob import etag as webob_etag

from sizeaware import exceptions
from sizeaware import headers

#: What an entity tag is made of (RFC 9110 section 8.8.3: ``etagc``),
#: checked so a checksum of another shape never makes a malformed header.
_ETAGC = re.compile(r'[\x21\x23-\x7e]+')

# The hash an image's MD5 ``checksum`` was taken with.
_CHECKSUM_ALGORITHM = 'md5'


@dataclasses.dataclass(frozen=True)
class Representation:
    """An active image's data, as its record describes it."""

    size: int
    #: The entity tag's opaque value (no quotes), or None.
    etag: typing.Optional[str]
    #: Whether the image's store reads at an offset.
    ranged: bool
    #: ``(hash algorithm, hex digest)`` of the whole data, or None.
    digest: typing.Optional[tuple]

    @classmethod
    def of(cls, image, ranged):
        """The representation of ``image`` (its record as Glance shows
        it), or None when it has no data to download (not ``active``, or
        of unknown size): Glance answers such a download itself."""
        size = image.get('size')
        if image.get('status') != 'active' or not isinstance(size, int) or (
                isinstance(size, bool) or size < 0):
            return None
        digest = None
        algorithm, value = image.get('os_hash_algo'), image.get(
            'os_hash_value')
        if algorithm and value:
            digest = (str(algorithm), str(value).lower())
        elif image.get('checksum'):
            digest = (_CHECKSUM_ALGORITHM, str(image['checksum']).lower())
        etag = digest[1] if digest is not None else None
        if etag is not None and not _ETAGC.fullmatch(etag):
            etag = None
        return cls(size=size, etag=etag, ranged=bool(ranged), digest=digest)

    @property
    def etag_header(self):
        """The ``ETag`` header's value, or None."""
        return None if self.etag is None else '"%s"' % self.etag


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to answer: 304, or the whole image (``span`` None, 200), or
    the bytes ``span[0]`` to ``span[1]`` (exclusive, 206)."""

    status: int
    span: typing.Optional[tuple] = None


NOT_MODIFIED = Plan(304)
WHOLE = Plan(200)


def plan(environ, representation):
    """Decide what the download request in ``environ`` gets.

    :raises sizeaware.exceptions.PreconditionFailed: for an ``If-Match``
        that does not match.
    :raises sizeaware.exceptions.RangeNotSatisfiable: for a range that
        the image cannot satisfy.
    """
    etag = representation.etag
    if_match = environ.get('HTTP_IF_MATCH')
    if if_match is not None and not _matches(if_match, etag, strong=True):
        raise exceptions.PreconditionFailed(
            'The image does not match If-Match %s: its entity tag is %s.'
            % (headers.quote(if_match), representation.etag_header or
               'unknown'))
    if_none_match = environ.get('HTTP_IF_NONE_MATCH')
    if if_none_match is not None and _matches(if_none_match, etag,
                                              strong=False):
        return NOT_MODIFIED
    value = environ.get('HTTP_RANGE')
    if value is None or not representation.ranged or (
            representation.size == 0):
        return WHOLE
    if_range = environ.get('HTTP_IF_RANGE')
    if if_range is not None and not if_range_holds(if_range, etag):
        return WHOLE
    span = requested_span(value, representation.size)
    return WHOLE if span is None else Plan(206, span)


def _matches(value, etag, strong):
    matcher = webob_etag.ETagMatcher.parse(value, strong=strong)
    if matcher is webob_etag.AnyETag:
        return True
    return etag is not None and etag in matcher


def if_range_holds(value, etag):
    """Whether an ``If-Range`` lets the range through: only a strong
    entity tag equal to the image's (RFC 9110 section 13.1.5); a date, a
    weak tag, ``*`` or an empty value does not."""
    if_range = webob_etag.IfRange.parse(value)
    if isinstance(if_range, webob_etag.IfRangeDate) or (
            if_range.etag is webob_etag.AnyETag):
        return False
    return etag is not None and etag in if_range.etag


def requested_span(value, size):
    """``(first, end)`` (end exclusive) of a ``Range`` on ``size`` bytes,
    or None when the header is to be ignored.

    :raises sizeaware.exceptions.RangeNotSatisfiable: see the module
        docstring.
    """
    if ',' in value:
        return None
    try:
        requested = byterange.Range.parse(value)
    except ValueError:  # webob on "bytes=-"
        return None
    if requested is None:
        return None
    if requested.end is None and requested.start == 0 and (
            value.partition('=')[2].lstrip(' \t').startswith('-')):
        raise exceptions.RangeNotSatisfiable(
            'Range %s asks for no byte: a suffix of length 0.'
            % headers.quote(value), size)
    if requested.end is None and requested.start < -size:
        # A suffix longer than the image is the whole image.
        requested = byterange.Range(0, None)
    span = requested.range_for_length(size)
    if span is None:
        raise exceptions.RangeNotSatisfiable(
            'Range %s lies past the image: its size is %d bytes.'
            % (headers.quote(value), size), size)
    return span


def range_header(span):
    """The ``Range`` value asking for ``span``: ``bytes=first-last``."""
    return str(byterange.Range(*span))


def content_range(span, size):
    """The ``Content-Range`` a 206 for ``span`` carries."""
    return str(byterange.ContentRange(span[0], span[1], size))
