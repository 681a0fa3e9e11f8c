"""aria2c over four connections against one, on an emulated WAN.

One Glance 33 under uwsgi (2 processes of 8 threads by default) with
every filter of ours (the download filter gives ``Accept-Ranges`` and the
``ETag`` aria2c splits by), sqlite and the filesystem store, whose reads
serve ranges. An unmodified aria2c downloads the image through
``tests/functional/faultproxy.py``, which delays each piece 25 ms in each
direction of each connection and caps each connection at 20 MiB/s (the
kernel has no netem): once with one connection (``-x 1 -s 1``), once with
four (``-x 4 -s 4 -k 1M``), rounds alternating the order. Each download is
checked by sha256. Run from the repository root::

    .stack/venvs/tests/bin/python benchmarks/split_downloads.py
    .stack/venvs/tests/bin/python benchmarks/split_downloads.py \\
        --size 64M --repeat 1

Not a test: nothing is asserted about timings.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

import _common
from _common import MiB

from tests.functional import faultproxy
from teststack import glance as glance_stack

#: ``(label, aria2c options)``.
MODES = (('aria2c, 1 connection', ['-x', '1', '-s', '1']),
         ('aria2c, 4 connections', ['-x', '4', '-s', '4', '-k', '1M']))


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while piece := f.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


def aria2c(url, headers, options, directory):
    """Download ``url`` into ``directory``; ``(seconds, path)``."""
    argv = ['aria2c', '-q', '--allow-overwrite=true',
            '--auto-file-renaming=false', '--file-allocation=none',
            '--max-tries=1', '-d', directory, '-o', 'image'] + options
    for name, value in headers.items():
        argv += ['--header', '%s: %s' % (name, value)]
    start = time.perf_counter()
    subprocess.run(argv + [url], check=True)
    return time.perf_counter() - start, os.path.join(directory, 'image')


def run(args, image):
    expected = sha256_of(image)
    glance = glance_stack.Glance(
        args.release, processes=args.processes, threads=args.threads,
        extra_conf={'DEFAULT': {'debug': False}})
    results = {label: [] for label, _ in MODES}
    loads = []
    glance.start()
    try:
        identity = glance.identity_headers('bench')
        api = _common.GlanceAPI(glance.url, identity)
        image_id = api.create()
        result = api.upload(image_id, image, args.size, chunked=False)
        if result.status != 204:
            raise RuntimeError('upload: %r' % result)
        with faultproxy.FaultProxy(
                ('127.0.0.1', glance.port), latency=args.latency,
                rate=args.rate) as proxy, \
                tempfile.TemporaryDirectory() as directory:
            url = '%s/v2/images/%s/file' % (proxy.url, image_id)
            for round_no in range(args.repeat):
                order = MODES if round_no % 2 == 0 else MODES[::-1]
                for label, options in order:
                    loads.append(os.getloadavg()[0])
                    seconds, path = aria2c(url, identity, options,
                                           directory)
                    if sha256_of(path) != expected:
                        raise RuntimeError('%s: wrong sha256' % label)
                    os.unlink(path)
                    results[label].append(seconds)
                    _common.log('round %d %-22s %6.2f s (load %.1f)' % (
                        round_no + 1, label, seconds, loads[-1]))
    finally:
        glance.stop()
    return results, loads


def report(args, results, loads):
    one = results[MODES[0][0]]
    base = _common.median(one)
    rows = []
    for label, _ in MODES:
        runs = results[label]
        seconds = _common.median(runs)
        speedup = base / seconds
        paired = _common.median([a / r for r, a in zip(runs, one)])
        rows.append([label, '%.1f' % seconds,
                     '%.1f' % (args.size / MiB / seconds),
                     '%.2f' % speedup, '%.2f' % paired,
                     '-' if runs is one else (
                         'yes' if min(speedup, paired) >= 2.5 else 'NO'),
                     ' '.join('%.1f' % s for s in runs)])
    return [_common.table(
        ['download', 's', 'MiB/s', 'speed-up', 'paired', '>= 2.5',
         'rounds (s)'], rows, title=(
            '%s image through Glance %s and the download filter over an '
            'emulated WAN (the proxy delays each connection %d ms each way '
            'and caps it at %s/s), %d rounds, medians; speed-up = time of '
            'one connection / time (paired: median of per-round ratios); '
            'every download checked by sha256; load %.1f to %.1f'
            % (_common.human(args.size), args.release, args.latency * 1000,
               _common.human(args.rate), args.repeat, min(loads),
               max(loads))))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    _common.add_download_options(parser, '256M', 3)
    parser.add_argument('--latency', type=float, default=0.025,
                        help='seconds added each way (default 0.025)')
    parser.add_argument('--rate', type=_common.parse_size,
                        default=20 * MiB,
                        help='bytes per second per connection (default 20M)')
    return _common.run_on_image(parser, argv, run, report)


if __name__ == '__main__':
    sys.exit(main())
