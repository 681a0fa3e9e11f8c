"""The checks an assembled image passes before Glance sees a byte of it.

A session's bytes arrive in pieces, out of order, from connections that
break; only the whole image can be judged. Finalize reads the spool once
through the stream base and checks, as oVirt's finalize does:

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
"""

import hashlib

from oslo_utils.imageutils import format_inspector

from sizeaware import exceptions
from sizeaware import stream

#: Formats found in an image of each disk_format that are its own.
_COMPATIBLE = {'raw': {'raw', 'gpt'}}


class DigestingStream(stream.BodyStream):
    """The stream base, hashing every piece it delivers."""

    def __init__(self, pull, expected=None, delimited=False):
        super().__init__(pull, expected, delimited)
        self.sha256 = hashlib.sha256()

    def chunk_update(self, data):
        self.sha256.update(data)


def check(session, disk_format):
    """Read the session's whole image once and check it.

    :raises sizeaware.exceptions.ImageRefused: with the reason.
    """
    reader = session.reader(DigestingStream)
    inspected = format_inspector.InspectWrapper(reader)
    try:
        while inspected.read(stream.DEFAULT_READ_SIZE):
            pass
    finally:
        inspected.close()
    declared = session.record.sha256
    if declared is not None and reader.sha256.hexdigest() != declared:
        raise exceptions.ImageRefused(
            'The image data does not match the declared sha256 %s (its '
            'sha256 is %s).' % (declared, reader.sha256.hexdigest()))
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
