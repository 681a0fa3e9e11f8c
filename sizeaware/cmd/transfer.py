"""``sizeaware``: upload and download Glance images, resumably.

Argument parsing only: the commands' arguments (``add_*_arguments``) and
their checks (:func:`check_arguments`), shared with the openstackclient
plugin (:mod:`sizeaware.osc`); bad usage exits with status 2 here. The
commands run in :func:`sizeaware.client.cli.run`.
"""

import argparse
import sys

from sizeaware.client import cli
from sizeaware.client import connection
from sizeaware.client import manifest

DESCRIPTION = """\
Upload and download the data of OpenStack Glance images over links that
break, stall and corrupt, and after the client itself was killed.

Credentials are read as the openstack CLI reads them: OS_* variables,
--os-cloud / OS_CLOUD and clouds.yaml. --os-image-url (OS_IMAGE_URL)
overrides the catalog's image endpoint; with it and no credentials, no
token is sent and --os-header adds any headers (a Glance without
keystone).
"""

EPILOG = """\
upload
  Sends X-OpenStack-Image-Size and a Content-Length body (never chunked
  for a file; give --size for standard input). Where Glance runs
  sizeaware's resumable filter, the image goes as ranged PUTs, --parallel
  at once, and after a break only the bytes the server does not hold are
  sent again; the same command resumes after the client was killed (its
  state is in --state-dir). Elsewhere one PUT, started again after a
  break. Digests of fixed-size chunks, computed as the bytes go, are
  recorded in the image's properties (sizeaware_chunks*).

download
  Writes to .FILE.sizeaware-part beside FILE and renames it only once
  the whole image matches its os_hash_value (else its checksum). Resumes
  with Range after a break, keeping an answer only if it is a 206 of the
  exact range with the same ETag; the same command resumes a download
  whose client was killed. Checks each chunk against the recorded digests
  as it arrives and fetches again only a bad one.

exit status
  0 done and verified; 1 the transfer failed (network, integrity, the
  image is not FILE, retries spent); 2 bad usage; 3 refused by the server
  (a 4xx).

examples
  sizeaware upload --parallel 4 IMAGE_ID disk.raw
  xz -dc disk.raw.xz | sizeaware upload --size 10737418240 IMAGE_ID -
  sizeaware download --parallel 4 IMAGE_ID disk.raw
"""


def _size(text):
    """A byte count: digits, optionally with K, M, G or T (powers of
    1024)."""
    units = {'k': 1, 'm': 2, 'g': 3, 't': 4}
    text = text.strip().lower().rstrip('ib').rstrip('i')
    factor = 1
    if text and text[-1] in units:
        factor = 1024 ** units[text[-1]]
        text = text[:-1]
    try:
        value = int(text) * factor
    except ValueError:
        raise argparse.ArgumentTypeError('not a size: %r' % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError('a size cannot be negative')
    return value


def _header(text):
    """``'Name: value'`` -> ``('Name', 'value')``."""
    try:
        return connection.parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1')
    return value


UPLOAD_HELP = 'upload an image\'s data'
UPLOAD_DESCRIPTION = ('Upload FILE (or standard input, "-") as the data of '
                      'the queued image IMAGE.')
DOWNLOAD_HELP = 'download an image\'s data'
DOWNLOAD_DESCRIPTION = 'Download the data of the active image IMAGE into FILE.'


def add_endpoint_arguments(group):
    """--os-cloud and --os-image-url: where the console script finds its
    credentials and Glance (openstackclient has options of its own)."""
    group.add_argument('--os-cloud', metavar='NAME',
                       help='a cloud of clouds.yaml (default: OS_CLOUD)')
    group.add_argument('--os-image-url', metavar='URL',
                       help='the image endpoint (default: OS_IMAGE_URL, '
                       'else the catalog)')


def add_connection_arguments(group):
    """The options of both commands about the connections and their
    streams."""
    group.add_argument('--os-header', metavar='"NAME: VALUE"',
                       action='append', default=[], type=_header,
                       help='a header for every request (repeatable)')
    group.add_argument('--connect-timeout', type=float,
                       default=connection.CONNECT_TIMEOUT, metavar='S',
                       help='seconds to connect (default %(default)s)')
    group.add_argument('--read-timeout', type=float,
                       default=connection.READ_TIMEOUT, metavar='S',
                       help='seconds of silence after which a connection '
                       'counts as stalled and is made again (default '
                       '%(default)s)')
    group.add_argument('--parallel', type=_positive, default=1, metavar='K',
                       help='streams at once (default 1)')
    group.add_argument('--no-progress', action='store_true',
                       help='no progress bar (there is none when stderr is '
                       'not a terminal)')


def add_upload_arguments(parser):
    """The arguments of ``upload`` beside the connection's."""
    parser.add_argument('image', metavar='IMAGE', help='the image\'s id')
    parser.add_argument('file', metavar='FILE', help='a file, or - for '
                        'standard input')
    parser.add_argument('--size', type=_size, metavar='N',
                        help='the size in bytes (required for standard '
                        'input)')
    parser.add_argument('--stage', action='store_true',
                        help='stage the data (PUT .../stage, for '
                        'glance-direct import) instead of uploading it')
    parser.add_argument('--chunk-size', type=_size, metavar='S',
                        help='the digests\' chunk size, at least %d MiB, '
                        'doubled as the image needs (default: the smallest '
                        'that fits)' % (manifest.MIN_CHUNK // 2**20))
    parser.add_argument('--chunk-digest', metavar='ALGORITHM',
                        default=manifest.DEFAULT_ALGORITHM,
                        help='the chunk digests\' algorithm: crc32c '
                        '(default, in hardware) or any hashlib one, such as '
                        'sha256 (cut to %d bytes)' % manifest.DIGEST_BYTES)
    parser.add_argument('--state-dir', metavar='DIR',
                        help='where to keep the state that lets a killed '
                        'upload resume (default ~/.cache/sizeaware)')
    parser.add_argument('--no-digests', action='store_true',
                        help='record no chunk digests')
    parser.add_argument('--no-resumable', action='store_true',
                        help='one plain PUT even where Glance keeps partial '
                        'uploads (it then starts again from the first byte '
                        'after a break)')


def add_download_arguments(parser):
    """The arguments of ``download`` beside the connection's."""
    parser.add_argument('image', metavar='IMAGE', help='the image\'s id')
    parser.add_argument('file', metavar='FILE', help='the file to write')
    parser.add_argument('--no-chunk-check', action='store_true',
                        help='ignore the chunk digests (the whole image is '
                        'still verified)')


def build_parser():
    parser = argparse.ArgumentParser(
        prog='sizeaware', description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group('connection')
    add_endpoint_arguments(group)
    add_connection_arguments(group)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     required=True)
    add_upload_arguments(commands.add_parser(
        'upload', parents=[common], help=UPLOAD_HELP,
        description=UPLOAD_DESCRIPTION))
    add_download_arguments(commands.add_parser(
        'download', parents=[common], help=DOWNLOAD_HELP,
        description=DOWNLOAD_DESCRIPTION))
    return parser


def check_arguments(args, usage_error):
    """What the parser cannot check alone; ``usage_error(message)`` is
    called (and is expected to exit with status 2) for bad usage."""
    if getattr(args, 'chunk_size', None) is not None and (
            args.chunk_size < manifest.MIN_CHUNK):
        usage_error('--chunk-size must be at least %d' % manifest.MIN_CHUNK)
    if getattr(args, 'chunk_digest', None):
        try:
            manifest.new_hash(args.chunk_digest)
        except ValueError:
            usage_error('--chunk-digest: unknown algorithm %r'
                        % args.chunk_digest)


def connection_options(args):
    """The keyword arguments of :class:`GlanceConnection` that the
    connection options give: headers and timeouts."""
    return {
        'headers': dict(args.os_header),
        'connect_timeout': args.connect_timeout,
        'read_timeout': args.read_timeout}


def _connect(args):
    return connection.GlanceConnection.from_config(
        cloud=args.os_cloud, image_url=args.os_image_url,
        **connection_options(args))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(args, parser.error)
    return cli.run(args.command, args, lambda: _connect(args))


if __name__ == '__main__':
    sys.exit(main())
