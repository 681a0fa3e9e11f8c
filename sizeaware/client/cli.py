"""The commands ``sizeaware upload`` and ``sizeaware download``: what each
does with its parsed arguments, the summary it prints, and its exit status.

The console script (:mod:`sizeaware.cmd.transfer`) and the openstackclient
plugin (:mod:`sizeaware.osc`) parse the arguments, report bad usage (exit
status 2) and call :func:`run`; nothing here judges usage. Every other
failure is the transfer's: a ``ValueError`` raised here is a bug, and
ends the command with Python's traceback (status 1).
"""

import contextlib
import sys

from sizeaware.client import connection
from sizeaware.client import download
from sizeaware.client import errors
from sizeaware.client import readers
from sizeaware.client import upload

#: Exit statuses: done (and verified); the transfer failed (network,
#: integrity, retries spent, an answer that makes no sense); refused by
#: the server (a 4xx); interrupted.
OK, FAILED, REFUSED, INTERRUPTED = 0, 1, 3, 130


def _report(text):
    print(text, file=sys.stderr)


def _rate(count, seconds):
    return count / 2**20 / max(seconds, 1e-6)


def _upload(connect, args, show):
    with contextlib.closing(readers.open_source(args.file, args.size)) as (
            source):
        stats = upload.Upload(
            connect(), args.image, source,
            target='stage' if args.stage else 'file',
            parallel=args.parallel, chunk_size=args.chunk_size,
            state_dir=args.state_dir, show_progress=show,
            resumable=False if args.no_resumable else None,
            digests=None if args.no_digests else args.chunk_digest).run()
    _report('uploaded %d bytes to image %s in %.1f s (%.1f MiB/s); '
            'sent %d bytes%s; verified: %s%s' % (
                stats['size'], args.image, stats['seconds'],
                _rate(stats['size'] - stats['resumed_from'],
                      stats['seconds']),
                stats['sent'],
                ', resumed from %d' % stats['resumed_from']
                if stats['resumed_from'] else '',
                stats['verified'],
                '; chunk digests not recorded'
                if stats['digests_recorded'] is False else ''))


def _download(connect, args, show):
    stats = download.Download(
        connect(), args.image, args.file, parallel=args.parallel,
        verify_chunks=not args.no_chunk_check, show_progress=show).run()
    _report('downloaded %d bytes of image %s to %s in %.1f s '
            '(%.1f MiB/s); fetched %d bytes in %d requests; '
            're-fetched %d bytes of %d bad chunk(s); verified: %s%s'
            % (stats['size'], args.image, args.file, stats['seconds'],
               _rate(stats['fetched'], stats['seconds']),
               stats['fetched'], stats['requests'], stats['refetched'],
               stats['bad_chunks'], stats['verified'],
               ', resumed from %d' % stats['resumed_from']
               if stats['resumed_from'] else ''))


COMMANDS = {'upload': _upload, 'download': _download}


def run(command, args, connect):
    """Run ``command`` (``'upload'`` or ``'download'``) with ``args``, the
    namespace :mod:`sizeaware.cmd.transfer`'s arguments parse to; print
    its summary to stderr and return the exit status.

    :param connect: called with no arguments, inside the error handling:
        the :class:`~sizeaware.client.connection.GlanceConnection` to
        transfer through.
    """
    show = False if args.no_progress else None
    try:
        COMMANDS[command](connect, args, show)
    except errors.Refused as exc:
        _report('sizeaware: refused: %s' % exc)
        return REFUSED
    except (errors.TransferError, errors.Transient) as exc:
        _report('sizeaware: %s' % exc)
        return FAILED
    except connection.CONNECTION_ERRORS as exc:
        _report('sizeaware: cannot reach Glance: %s' % exc)
        return FAILED
    except KeyboardInterrupt:
        _report('sizeaware: interrupted; the same command resumes')
        return INTERRUPTED
    return OK
