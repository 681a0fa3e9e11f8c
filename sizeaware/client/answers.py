"""The checks made on every answer before a byte of it is kept."""

import html.parser

from webob import byterange

from sizeaware.client import errors


def raise_for_status(response, what):
    """Nothing for a 2xx; :class:`~errors.Transient` for a 5xx, 408 and
    429; :class:`~errors.Refused` for any other 4xx."""
    status = response.status_code
    if status < 300:
        return
    reason = '%s answered %d %s' % (what, status, _body_text(response))
    if status >= 500 or status in (408, 429):
        raise errors.Transient(reason)
    raise errors.Refused(status, reason)


def json_of(response, what):
    """The JSON document an answer holds; :class:`~errors.TransferError`
    when its body is something else (a proxy's page, a torn body)."""
    try:
        return response.json()
    except ValueError as exc:
        raise errors.TransferError(
            '%s answered %d with a body that is not JSON: %s'
            % (what, response.status_code, _body_text(response)[:100])
        ) from exc


def _body_text(response):
    try:
        text = response.text
    except Exception:  # the body itself broke: the status says enough
        return ''
    content_type = getattr(response, 'headers', {}).get('Content-Type', '')
    if content_type.startswith('text/html'):
        text = _HTMLReason.text_of(text)
    return ' '.join(text.split())[:300]


class _HTMLReason(html.parser.HTMLParser):
    """The reason in an HTML error page (webob's, which Glance and the
    filters answer to ``Accept: */*``), without its markup and without the
    status line its title and heading repeat."""

    _SKIPPED = ('title', 'h1', 'script', 'style')

    def __init__(self):
        super().__init__()
        self.parts = []
        self._skipping = 0

    @classmethod
    def text_of(cls, page):
        parser = cls()
        parser.feed(page)
        parser.close()
        return ' '.join(parser.parts)

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIPPED:
            self._skipping += 1

    def handle_endtag(self, tag):
        if tag in self._SKIPPED and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def content_range(value):
    """``(start, stop, length)`` of a ``Content-Range`` header (``stop``
    exclusive), or None when it is missing or malformed."""
    if not value:
        return None
    parsed = byterange.ContentRange.parse(value)
    if parsed is None or parsed.start is None:
        return None
    return parsed.start, parsed.stop, parsed.length


def check_part(status, headers, start, stop, size, etag):
    """May the answer to ``Range: bytes=start-(stop - 1)`` be written at
    ``start``? Raise if not.

    A 206 must name exactly the range asked for, of an image of ``size``
    bytes, with the same ``ETag`` when one is expected. A 200 is the whole
    image: kept only when the whole image was asked for (``start`` 0 and
    ``stop`` the size), with the same ``ETag``; any other 200 (a server
    that ignores ``Range``, or an ``If-Range`` that no longer matches) is
    never spliced.
    """
    received = headers.get('ETag')
    if etag is not None and received is not None and received != etag:
        raise errors.ImageChanged(
            'the image changed during the download (ETag %s, was %s)'
            % (received, etag))
    if status == 206:
        got = content_range(headers.get('Content-Range'))
        if got != (start, stop, size):
            raise errors.NotSpliceable(
                'asked for bytes %d-%d/%d, got Content-Range %r'
                % (start, stop - 1, size, headers.get('Content-Range')))
        return
    if status == 200:
        if start == 0 and stop == size:
            length = headers.get('Content-Length')
            if length is not None and int(length) != size:
                raise errors.NotSpliceable(
                    'a 200 of %s bytes for an image of %d' % (length, size))
            return
        if etag is not None and received is None:
            raise errors.ImageChanged(
                'a 200 without ETag to a ranged request with If-Range')
        raise errors.NotSpliceable(
            'the server answered 200 (the whole image) to a request for '
            'bytes %d-%d: not spliced' % (start, stop - 1))
    raise errors.NotSpliceable('unexpected status %d to a ranged request'
                               % status)


def same_record(first, now):
    """For a server without ETag: is ``now`` (the image's record fetched
    again) the image ``first`` described?"""
    keys = ('size', 'os_hash_value', 'checksum', 'updated_at', 'status')
    for key in keys:
        if first.get(key) != now.get(key):
            raise errors.ImageChanged(
                'the image changed during the download (%s %r, was %r)'
                % (key, now.get(key), first.get(key)))
