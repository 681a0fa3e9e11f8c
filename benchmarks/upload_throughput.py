"""Upload throughput with and without ``sizeaware``, on one uwsgi server.

Part (a): uwsgi serving ``drain_app.py``: ``/with/...`` is SizeFilter in
front of an app that drains the body the way Glance reads it,
``/without/...`` the same app alone. Part (b): one real Glance (33 by
default) with the filesystem store, whose paste ini serves ``/with/...``
through the pipeline with the filter and ``/without/...`` through the same
pipeline without it (see ``_common.dual_paste_ini``).

Both are measured for a Content-Length body and a chunked one, each
carrying ``X-OpenStack-Image-Size``, alternating with and without the
filter ``--repeat`` times; the table gives medians and the with/without
throughput ratio. Run from the repository root with a Glance venv's
Python::

    .stack/venvs/glance-33/bin/python benchmarks/upload_throughput.py
    .stack/venvs/glance-33/bin/python benchmarks/upload_throughput.py \\
        --size 100M --repeat 3 --parts a

Not a test: nothing is asserted about timings.
"""

import argparse
import json
import sys

import _common
from _common import MiB

from teststack import config
from teststack import glance as glance_stack
from teststack import process
from teststack import venvs

FRAMINGS = ('content-length', 'chunked')


def _order(round_no, extra=()):
    """Alternate which side goes first, so drift hits both equally."""
    sides = (('with', 'without') if round_no % 2 == 0
             else ('without', 'with'))
    return sides + tuple(extra)


# ---------------------------------------------------------------------------
# (a) uwsgi + drain app


def uwsgi_options(venv, port, workdir, read_size):
    """The uwsgi options teststack runs Glance with, for the drain app."""
    options = config.uwsgi_options(port, workdir, venv, request_bodies=True)
    options.update({
        'chdir': _common.REPO,
        'pythonpath': _common.REPO,
        'wsgi-file': _common.HERE / 'drain_app.py',
        'env': 'DRAIN_READ_SIZE=%d' % read_size,
    })
    return {'uwsgi': options}


def run_drain(args, image):
    venv = venvs.glance_venv(args.release)
    server = process.Service('uwsgi', prefix='bench-drain')
    workdir = server.workdir
    port = process.free_port()
    ini = workdir / 'uwsgi.ini'
    ini.write_text(config.render_ini(
        uwsgi_options(venv, port, workdir, args.read_size)))
    url = 'http://127.0.0.1:%d' % port
    results = {}
    try:
        server.spawn([venvs.venv_bin(venv, 'uwsgi'), '--ini', ini])
        server.wait_for_http(url + '/', timeout=60, ok=(404,))
        headers = {'Content-Type': 'application/octet-stream',
                   'X-OpenStack-Image-Size': str(args.size)}
        worker = _common.uwsgi_worker(_common.read_pid(workdir / 'uwsgi.pid'))
        reader = None
        for framing in args.framing:
            chunked = framing == 'chunked'
            for side in _order(0, args.extra):  # warm up every path
                _drain_once(url, side, image, args.size, chunked, headers,
                            args.piece)
            for round_no in range(args.repeat):
                for side in _order(round_no, args.extra):
                    cpu = _common.cpu_seconds(worker)
                    seconds, body = _drain_once(url, side, image, args.size,
                                                chunked, headers, args.piece)
                    cpu = _common.cpu_seconds(worker) - cpu
                    reader = body['reader']
                    results.setdefault((framing, side), []).append(
                        (seconds, cpu))
                    _common.log('(a) %-14s %-7s %6.2f s  %7.0f MiB/s  '
                                'worker CPU %5.2f s  (%s)'
                                % (framing, side, seconds,
                                   args.size / MiB / seconds, cpu,
                                   body['body_file']))
    finally:
        server.stop()
    return results, 'drain app (reads %d B at a time via %s)' % (
        args.read_size, reader)


def _drain_once(url, side, image, size, chunked, headers, piece):
    path = '/%s/v2/images/bench/file' % side
    result = _common.upload(url, path, image, size, chunked=chunked,
                            headers=headers, piece=piece)
    if result.status != 200:
        raise RuntimeError('%s: %r' % (path, result))
    body = json.loads(result.body)
    if body['received'] != size:
        raise RuntimeError('%s drained %d of %d bytes'
                           % (path, body['received'], size))
    return result.seconds, body


# ---------------------------------------------------------------------------
# (b) Glance + filesystem store


def run_glance(args, image):
    venv = venvs.glance_venv(args.release)
    glance = glance_stack.Glance(
        args.release, paste_ini=_common.dual_paste_ini(venv), processes=1,
        threads=4, extra_conf={'DEFAULT': {'debug': False}})
    results = {}
    glance.start()
    try:
        api = _common.GlanceAPI(glance.url, glance.identity_headers('bench'))
        worker = _common.uwsgi_worker(
            _common.read_pid(glance.workdir / 'uwsgi.pid'))
        for framing in args.framing:
            chunked = framing == 'chunked'
            for round_no in range(args.repeat):
                for side in _order(round_no, []):
                    seconds, cpu = _glance_once(api, worker, side, image,
                                                args.size, chunked,
                                                args.piece)
                    results.setdefault((framing, side), []).append(
                        (seconds, cpu))
                    _common.log('(b) %-14s %-7s %6.2f s  %7.0f MiB/s  '
                                'worker CPU %5.2f s'
                                % (framing, side, seconds,
                                   args.size / MiB / seconds, cpu))
    finally:
        glance.stop()
    return results, 'Glance %s, filesystem store' % args.release


def _glance_once(api, worker, side, image, size, chunked, piece):
    prefix = '/' + side
    image_id = api.create(prefix)
    try:
        cpu = _common.cpu_seconds(worker)
        result = api.upload(image_id, image, size, chunked=chunked,
                            prefix=prefix, piece=piece)
        cpu = _common.cpu_seconds(worker) - cpu
        if result.status != 204:
            raise RuntimeError('upload via %s: %r' % (prefix, result))
        info = api.get(image_id, prefix)
        if (info['status'], info['size']) != ('active', size):
            raise RuntimeError('image after upload: %s %s'
                               % (info['status'], info['size']))
        return result.seconds, cpu
    finally:
        api.delete(image_id, prefix)


# ---------------------------------------------------------------------------


def report(title, results, size, target, piece):
    """Medians; ratios are with/without throughput (> 1: faster with)."""
    rows = []
    for framing in FRAMINGS:
        if (framing, 'with') not in results:
            continue
        runs_with = results[(framing, 'with')]
        runs_without = results[(framing, 'without')]
        t_with = _common.median([r[0] for r in runs_with])
        t_without = _common.median([r[0] for r in runs_without])
        cpu_with = _common.median([r[1] for r in runs_with])
        cpu_without = _common.median([r[1] for r in runs_without])
        # Each round ran both sides back to back: the ratio within a round.
        paired = _common.median([b[0] / a[0] for a, b in
                                 zip(runs_with, runs_without)])
        ratio = t_without / t_with
        runs = results.get((framing, 'raw'))
        raw = '%.0f / %.2f' % (
            size / MiB / _common.median([r[0] for r in runs]),
            _common.median([r[1] for r in runs])) if runs else '-'
        rows.append([
            framing,
            '%.0f' % (size / MiB / t_without),
            '%.0f' % (size / MiB / t_with),
            '%.3f' % ratio,
            '%.3f' % paired,
            'yes' if min(ratio, paired) >= target else 'NO',
            '%.2f' % cpu_without, '%.2f' % cpu_with,
            '%.3f' % (cpu_without / cpu_with) if cpu_with else '-',
            len(runs_with), raw,
        ])
    return _common.table(
        ['framing', 'MiB/s without', 'MiB/s with', 'ratio', 'paired ratio',
         '>= %.2f' % target, 'CPU s without', 'CPU s with', 'CPU ratio',
         'runs', 'raw MiB/s, CPU s'],
        rows, title='%s, %s body, chunks of %s, medians; ratio = '
                    'throughput with / without the filter (paired: median '
                    'of the per-round ratios; CPU: the uwsgi worker\'s '
                    'user+system time per upload, ratio without / with)'
                    % (title, _common.human(size), _common.human(piece)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    _common.add_upload_options(parser, 5, 'uploads per side and framing')
    parser.add_argument('--parts', default='a,b',
                        help='a (drain app), b (Glance filesystem); '
                             'default a,b')
    parser.add_argument('--framing', default=','.join(FRAMINGS),
                        help='content-length, chunked (default both)')
    parser.add_argument('--release', default='33',
                        help='Glance release whose venv serves (default 33)')
    parser.add_argument('--read-size', type=_common.parse_size,
                        default='64K', help='drain app read size (default '
                                            '64K, the filesystem store\'s)')
    parser.add_argument('--raw', action='store_true',
                        help='(a) also time /raw/, the body read straight '
                             'from uwsgi with no Python reader around it')
    args = parser.parse_args(argv)
    args.extra = ['raw'] if args.raw else []
    args.framing = [f.strip() for f in args.framing.split(',') if f.strip()]
    for framing in args.framing:
        if framing not in FRAMINGS:
            parser.error('unknown framing %r' % framing)
    parts = [p.strip() for p in args.parts.split(',') if p.strip()]
    image = _common.image_file(args.size, args.image)

    tables = []
    if 'a' in parts:
        results, title = run_drain(args, image)
        tables.append(report('(a) ' + title, results, args.size, 0.97,
                             args.piece))
    if 'b' in parts:
        results, title = run_glance(args, image)
        tables.append(report('(b) ' + title, results, args.size, 0.99,
                             args.piece))
    _common.print_tables(tables)
    return 0


if __name__ == '__main__':
    sys.exit(main())
