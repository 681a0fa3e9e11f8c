"""The transfer client (``sizeaware upload`` / ``download``) against
python-glanceclient and openstacksdk, on one Glance and one image.

One Glance 33 under uwsgi (2 processes of 8 threads by default) with the
resumable and download filters, identity from headers, sqlite and the
filesystem store. ``--repeat N`` rounds (medians; each measurement is
logged as it comes, the load is printed with the figures). Each
measurement starts after ``sync`` and after a child process touched
3 GiB of memory (:func:`settle_memory`), with the file it reads in the
page cache. Measured:

* single-stream upload and download throughput on loopback: the CLI (a
  subprocess, as a user runs it, its start-up included) against
  python-glanceclient and openstacksdk in this process. The CLI uploads
  once as ranged PUTs into the resumable filter's spool (what it does by
  default where the filter runs) and once as one plain PUT
  (``--no-resumable``, what the two libraries send);
* 4 streams against 1 through an emulated WAN (``FaultProxy(target,
  latency=0.025, rate=20 MiB/s)``, a per-connection cap), for uploads and
  downloads, on a smaller image (``--wan-size``);
* the cost of per-chunk digests: upload with and without
  (``--no-digests``), download with and without checking them
  (``--no-chunk-check``);
* the CLI's peak RSS (``ru_maxrss`` of the subprocess, from ``wait4``)
  for each transfer of the image, and of a ``--big`` one if asked (a
  sparse file: it needs that much free disk twice, in the store and in
  the spool, and minutes).

Run from the repository root::

    .stack/venvs/tests/bin/python benchmarks/transfer_client.py
    .stack/venvs/tests/bin/python benchmarks/transfer_client.py \\
        --size 256M --wan-size 64M

Not a test: nothing is asserted about timings.
"""

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import _common
from _common import MiB

from tests.functional import faultproxy
from teststack import glance as glance_stack

CLI = str(pathlib.Path(sys.executable).with_name('sizeaware'))
PEAK_RSS = pathlib.Path(__file__).resolve().with_name('_peak_rss.py')


class Stack:
    def __init__(self, glance):
        self.glance = glance
        # One role: python-glanceclient percent-encodes header values, so
        # "admin,member" would reach Glance as "admin%2Cmember".
        self.headers = glance.identity_headers(uuid.uuid4().hex,
                                               roles=('admin',))
        self.api = _common.GlanceAPI(glance.url, self.headers)

    def new_image(self):
        return self.api.create()

    def cli(self, url, *args):
        """Run the CLI; (seconds, peak RSS in MiB)."""
        argv = [CLI, *args[:1], '--os-image-url', url, '--no-progress']
        for name, value in self.headers.items():
            argv += ['--os-header', '%s: %s' % (name, value)]
        argv += list(args[1:])
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(PEAK_RSS), *argv],
                                env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode:
            raise RuntimeError('%s: %s' % (' '.join(argv), result.stderr))
        return seconds, int(result.stdout.split()[-1]) / 1024


def glanceclient_for(stack):
    from glanceclient import client as gc
    return gc.Client('2', endpoint=stack.glance.url,
                     identity_headers=dict(stack.headers))


def sdk_for(stack):
    from keystoneauth1 import noauth
    from keystoneauth1 import session
    import openstack.connection
    sess = session.Session(auth=noauth.NoAuth(),
                           additional_headers=dict(stack.headers))
    return openstack.connection.Connection(
        session=sess, image_endpoint_override=stack.glance.url)


def settle_memory(size=3 * 2**30):
    """Touch ``size`` bytes of memory in a child process, then free them.

    On this project's virtual machine, the first process to touch memory
    after another freed GiBs of it (openstacksdk holds a whole image)
    runs up to three times slower: the host takes freed pages back and
    faults them in again. Whatever runs next would pay for what ran
    before; a child that touches the memory first pays instead, for every
    measurement alike."""
    subprocess.run([sys.executable, '-c',
                    'b = bytearray(%d)\n'
                    'for i in range(0, len(b), 4096): b[i] = 1' % size],
                   check=True)


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=_common.parse_size, default='1G')
    parser.add_argument('--wan-size', type=_common.parse_size,
                        default='256M')
    parser.add_argument('--repeat', type=int, default=1,
                        help='rounds of the loopback figures (medians)')
    parser.add_argument('--big', type=_common.parse_size, default=None,
                        help='also the peak RSS of a transfer this big')
    _common.add_glance_options(parser)
    args = parser.parse_args()
    size = args.size
    path = _common.image_file(size)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='sizeaware-bench-'))
    glance = glance_stack.Glance(args.release, resumable={},
                                 processes=args.processes,
                                 threads=args.threads)
    glance.start()
    rows = {}
    try:
        stack = Stack(glance)
        url = glance.url
        mb = size / MiB

        rates = {}
        peaks = {}
        gclient = glanceclient_for(stack)
        sdk = sdk_for(stack)
        out = workdir / 'out.raw'
        # The image every download reads, uploaded by the CLI (so that it
        # has chunk digests).
        stored = stack.new_image()
        stack.cli(url, 'upload', '--no-resumable', stored, str(path))

        stored_file = glance.store_dirs['fs'] / stored

        def warm(source=stored_file):
            """Read a file into the page cache: this machine reclaims pages
            left cold for a while, and the download that came first after
            the uploads read the store from the disk (the upload after the
            downloads, its file)."""
            with open(source, 'rb') as handle:
                while handle.read(4 * MiB):
                    pass

        def cli_upload(*options):
            def run():
                warm(path)
                seconds, peak = stack.cli(url, 'upload', *options,
                                          stack.new_image(), str(path))
                peaks['upload'] = peak
                return seconds
            return run

        def library_upload(upload):
            def run():
                warm(path)
                image = stack.new_image()
                with open(path, 'rb') as handle:
                    return timed(lambda: upload(image, handle))
            return run

        def sdk_upload(image, handle):
            record = sdk.image.get_image(image)
            record.data = handle
            record.upload(sdk.image)

        def cli_download(*options):
            def run():
                warm()
                seconds, peak = stack.cli(url, 'download', *options, stored,
                                          str(out))
                peaks['download'] = peak
                out.unlink()
                return seconds
            return run

        def glanceclient_download():
            with open(out, 'wb') as handle:
                for piece in gclient.images.data(stored):
                    handle.write(piece)

        def library_download(download):
            def run():
                warm()
                seconds = timed(download)
                out.unlink()
                return seconds
            return run

        tasks = [
            ('upload cli (ranged PUT, spool)', cli_upload()),
            ('upload cli (plain PUT)', cli_upload('--no-resumable')),
            ('upload cli (plain PUT, no digests)',
             cli_upload('--no-resumable', '--no-digests')),
            ('upload python-glanceclient', library_upload(
                lambda image, handle: gclient.images.upload(
                    image, handle, image_size=size))),
            ('upload openstacksdk', library_upload(sdk_upload)),
            ('download cli', cli_download()),
            ('download cli (no chunk check)',
             cli_download('--no-chunk-check')),
            ('download python-glanceclient',
             library_download(glanceclient_download)),
            ('download openstacksdk', library_download(
                lambda: sdk.image.download_image(stored, output=str(out)))),
        ]
        for round_number in range(args.repeat):
            _common.log('round %d of %d, %s, one stream'
                        % (round_number + 1, args.repeat,
                           _common.human(size)))
            # The uploads, then the downloads, each group in another order
            # each round: over four rounds every download comes first
            # once, right after the uploads (which slows whatever comes
            # first a little, even after the settling below).
            uploads = [t for t in tasks if t[0].startswith('upload')]
            downloads = [t for t in tasks if t[0].startswith('download')]
            order = []
            for group in (uploads, downloads):
                shift = round_number % len(group)
                order += group[shift:] + group[:shift]
            for name, run in order:
                # Each starts with nothing left to write back: the 1 GiB
                # the one before wrote would otherwise share the disk with
                # it, and a client that syncs its file (the CLI does, the
                # libraries do not) would wait for both.
                os.sync()
                settle_memory()
                rates.setdefault(name, []).append(mb / run())
                _common.log('  %-40s %8.1f MiB/s' % (name, rates[name][-1]))
        rss_up, rss_down = peaks['upload'], peaks['download']
        rows = {name: statistics.median(rates[name])
                for name, _ in tasks}

        # -- the emulated WAN ------------------------------------------
        wan_path = _common.image_file(args.wan_size)
        wan_mb = args.wan_size / MiB
        _common.log('WAN, %s' % _common.human(args.wan_size))
        wan = {}
        with faultproxy.FaultProxy(('127.0.0.1', glance.port),
                                   latency=0.025, rate=20 * MiB) as proxy:
            for streams in ('1', '4'):
                image = stack.new_image()
                t, _ = stack.cli(proxy.url, 'upload', '--parallel', streams,
                                 image, str(wan_path))
                wan['upload', streams] = wan_mb / t
                t, _ = stack.cli(proxy.url, 'download', '--parallel',
                                 streams, image, str(out))
                out.unlink()
                wan['download', streams] = wan_mb / t

        big = None
        if args.big:
            _common.log('peak RSS, %s (sparse)' % _common.human(args.big))
            big_path = workdir / 'big.raw'
            with open(big_path, 'wb') as handle:
                handle.truncate(args.big)
            image = stack.new_image()
            _, big_up = stack.cli(url, 'upload', image, str(big_path))
            big_path.unlink()
            _, big_down = stack.cli(url, 'download', image, str(out))
            out.unlink()
            big = (big_up, big_down)
    finally:
        glance.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    lines = ['Transfer client, %s image, one stream on loopback (MiB/s, '
             'median of %d; ratio to python-glanceclient)'
             % (_common.human(size), args.repeat), '']
    for kind in ('upload', 'download'):
        base = rows['%s python-glanceclient' % kind]
        for name, rate in rows.items():
            if name.startswith(kind):
                lines.append('  %-40s %8.1f  %5.2f' % (name, rate,
                                                       rate / base))
    lines += ['', 'Emulated WAN (25 ms, 20 MiB/s per connection), %s '
              '(MiB/s)' % _common.human(args.wan_size)]
    for kind in ('upload', 'download'):
        one, four = wan[kind, '1'], wan[kind, '4']
        lines.append('  %-10s 1 stream %6.1f   4 streams %6.1f   %.2fx'
                     % (kind, one, four, four / one))
    up = rows['upload cli (plain PUT)']
    up_bare = rows['upload cli (plain PUT, no digests)']
    down = rows['download cli']
    down_bare = rows['download cli (no chunk check)']
    lines += ['', 'Per-chunk digests: upload costs %+.1f %%, download '
              'costs %+.1f %% of the time' % (
                  (up_bare / up - 1) * 100, (down_bare / down - 1) * 100),
              '', 'Peak RSS of the CLI: %s upload %.0f MiB, download '
              '%.0f MiB' % (_common.human(size), rss_up, rss_down)]
    if big:
        lines.append('Peak RSS of the CLI: %s upload %.0f MiB, download '
                     '%.0f MiB' % (_common.human(args.big), *big))
    _common.print_tables(['\n'.join(lines)])


if __name__ == '__main__':
    main()
