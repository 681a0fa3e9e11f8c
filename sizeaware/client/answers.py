"""The checks made on every answer before a byte of it is kept."""

import html.parser

from sizeaware import resume
from sizeaware.client import errors


def raise_for_status(response, what):
    """Nothing for a 2xx; :class:`~errors.Transient` for the statuses
    worth another try (:func:`sizeaware.resume.retryable`, the one list
    for reads and writes); :class:`~errors.Refused` for any other."""
    status = response.status_code
    if status < 300:
        return
    reason = '%s answered %d %s' % (what, status, _body_text(response))
    if resume.retryable(status):
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


def same_record(first, now):
    """For a server without ETag: is ``now`` (the image's record fetched
    again) the image ``first`` described?"""
    keys = ('size', 'os_hash_value', 'checksum', 'updated_at', 'status')
    for key in keys:
        if first.get(key) != now.get(key):
            raise errors.ImageChanged(
                'the image changed during the download (%s %r, was %r)'
                % (key, now.get(key), first.get(key)))
