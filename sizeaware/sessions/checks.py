"""The checks an assembled image passes before Glance holds all of it.

A session's bytes arrive in pieces, out of order, from connections that
break; only the whole image can be judged. Finalize reads the spool once,
through the stream base, and that one read is both what Glance receives
and what is judged (:class:`CheckedImage`), as oVirt's finalize judges:

* the whole-image sha256, when the client declared one;
* the disk format, found by oslo.utils' format inspector
  (``InspectWrapper``, every format it knows), against the image's
  ``disk_format``: ``raw`` takes raw data or a partition table (``gpt``,
  which also covers MBR), ``iso`` an ISO 9660 image (a hybrid ISO also
  carries a partition table), any other format the inspector knows only
  itself; formats it does not know (``ami``, ``aki``, ``ari``, ``ploop``)
  are not matched;
* the inspector's safety checks of the format found, which refuse a qcow2
  image with a backing file or an external data file (a way to make the
  compute host read its own files) and a VMDK with extents elsewhere.

The verdict is taken before the last byte is handed on, and a refusal is
raised in its place: Glance never receives a whole image that fails, and a
read that fails leaves nothing stored (glance_store deletes a partial
image when the read raises, and the image goes back to ``queued``). Reading
the spool once rather than twice (judge, then upload) is what keeps a
resumable upload's finish close to a plain upload's time.
"""

from oslo_utils.imageutils import format_inspector

from sizeaware import digests
from sizeaware import exceptions
from sizeaware import stream

#: How much of the session is read at a time at finalize, whatever
#: Glance's reads: a piece costs a turn of every format inspector, so 1 MiB
#: pieces cost a sixteenth of 64 KiB ones per GiB.
PIECE_BYTES = 1024 * 1024
#: How much of a store-native session's image is read for its format: the
#: headers of every format the inspector knows (a VHDX region table lies
#: at 192 KiB, an ISO's volume descriptor at 32 KiB) with room to spare.
STORED_HEAD_BYTES = 4 * 1024 * 1024
#: Formats found in an image of each disk_format that are its own.
_COMPATIBLE = {'raw': {'raw', 'gpt'}}


class DigestingStream(stream.BodyStream):
    """The stream base, hashing every piece it delivers."""

    def __init__(self, pull, expected=None, delimited=False):
        super().__init__(pull, expected, delimited)
        self.sha256 = digests.new('sha256')

    def chunk_update(self, data):
        self.sha256.update(data)


class CheckedImage(stream.BodyStream):
    """A session's whole image, judged while it is read.

    :param session: the session, every byte held (or arriving: ``live``).
    :param disk_format: the image's ``disk_format``.
    :param live: a :class:`~sizeaware.sessions.receive.Live`, the bytes of
        the request still receiving them.

    The spool is read through the stream base (hashed only when a sha256
    was declared) and through the format inspector; before the last byte
    is delivered, :meth:`judge` runs, and a refusal is kept in
    :attr:`refusal` and raised instead of that byte.
    """

    def __init__(self, session, disk_format, live=None):
        self.disk_format = disk_format
        self.declared = session.record.sha256
        self._spool = session.reader(
            stream.BodyStream if self.declared is None else DigestingStream,
            live)
        self._inspected = format_inspector.InspectWrapper(self._spool)
        self._inspected_open = True
        #: The :class:`~sizeaware.exceptions.ImageRefused` raised, if any.
        self.refusal = None
        super().__init__(self._pull, session.record.size, delimited=True)
        if not self.expected:
            # No byte will be read: an empty image is judged at once.
            self.judge()

    def _pull(self, hint):
        # Large pieces whatever the consumer's reads (Glance's are 64 KiB):
        # the base hands them out in as many reads as it takes.
        return self._inspected.read(max(hint, PIECE_BYTES))

    def chunk_update(self, data):
        if self.received + len(data) == self.expected:
            self.judge()

    def judge(self):
        """Take the verdict on the bytes read so far, as the whole image.

        :raises sizeaware.exceptions.ImageRefused: with the reason.
        """
        self._close_inspected()
        try:
            _judge(self._inspected, self.disk_format, self.declared,
                   getattr(self._spool, 'sha256', None))
        except exceptions.ImageRefused as refusal:
            self.refusal = refusal
            raise

    def close(self):
        try:
            self._close_inspected()
        finally:
            super().close()

    def _close_inspected(self):
        # The inspectors decide only once told the data has ended, which
        # closing the wrapper (and with it the spool reader) does.
        if self._inspected_open:
            self._inspected_open = False
            self._inspected.close()


def judge_stored(session, disk_format):
    """Judge a store-native session's image as it is stored, before its
    location goes to Glance: its size, then its first
    :data:`STORED_HEAD_BYTES` for the format and the format's safety
    checks (every header the format inspector reads lies there), and the
    whole image only when a sha256 was declared.

    :raises sizeaware.exceptions.ImageRefused: with the reason.
    """
    rec = session.record
    stored = session.stored_size()
    if stored != rec.size:
        raise exceptions.ImageRefused(
            'The store holds %d bytes of the image, not the %d declared.'
            % (stored, rec.size))
    if rec.sha256 is not None or not rec.size:
        image = CheckedImage(session, disk_format)
        try:
            while image.read(PIECE_BYTES):
                pass
        finally:
            image.close()
        return
    head = session.reader()
    inspected = format_inspector.InspectWrapper(head)
    try:
        left = min(rec.size, STORED_HEAD_BYTES)
        while left > 0:
            data = inspected.read(min(left, PIECE_BYTES))
            if not data:
                break
            left -= len(data)
    finally:
        inspected.close()
    _judge(inspected, disk_format, None, None)


def _judge(inspected, disk_format, declared, sha256):
    if declared is not None and sha256.hexdigest() != declared:
        raise exceptions.ImageRefused(
            'The image data does not match the declared sha256 %s (its '
            'sha256 is %s).' % (declared, sha256.hexdigest()))
    try:
        found = inspected.formats or []
    except format_inspector.ImageFormatError as exc:
        raise exceptions.ImageRefused(
            'The image data could not be inspected: %s.' % exc) from exc
    names = {str(inspector) for inspector in found}
    if disk_format in format_inspector.ALL_FORMATS:
        if disk_format == 'iso':
            matches = 'iso' in names
        else:
            matches = names <= _COMPATIBLE.get(disk_format, {disk_format})
        if not matches:
            raise exceptions.ImageRefused(
                'The image data is in format %s, but the image\'s '
                'disk_format is %s.' % (','.join(sorted(names)), disk_format))
    for inspector in found:
        if str(inspector) == 'raw':
            continue
        try:
            inspector.safety_check()
        except format_inspector.SafetyCheckFailed as exc:
            raise exceptions.ImageRefused(
                'The %s image fails safety checks: %s.' % (
                    inspector, '; '.join(
                        '%s: %s' % item
                        for item in sorted(exc.failures.items())))) from exc
        except format_inspector.ImageFormatError as exc:
            raise exceptions.ImageRefused(
                'The %s image cannot be checked: %s.' % (inspector, exc)
            ) from exc
