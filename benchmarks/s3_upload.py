"""Time and worker memory of a large upload into Glance's S3 store.

The headline benchmark: glance_store's S3 driver can only use multipart
upload when it knows the image size; without it, it builds the whole image
in memory with ``image_data += chunk``. Glance 30 ignores
``X-OpenStack-Image-Size``, so a chunked upload carrying it is still of
unknown size there, unless ``sizeaware`` passes the size on.

One radosgw (``teststack.ceph.RadosGW``) serves S3; Glance runs under uwsgi
(1 process, 4 threads) with the ``sizeaware_s3`` backend and glance_store's
defaults (large objects from 100 MiB, 10 MiB parts). Its paste ini serves
``/with/...`` through the pipeline with the filter and ``/without/...``
through the same pipeline without it (``_common.dual_paste_ini``). Every
upload gets a fresh Glance server, so the worker's peak RSS (``VmHWM``,
reset through ``/proc/<pid>/clear_refs`` after a warm-up request, read
after the upload) is that upload's alone; ``--reuse-server`` keeps one
server per release instead.

Part (c), Glance 30 (``--release-c``)::

    chunked + header, without filter   the problem: single PUT, in memory
    chunked + header, with filter      the fix
    Content-Length + header, with      known-size baselines
    Content-Length + header, without

Part (d), Glance 33 (``--release-d``), which reads the header itself: the
same four cases; with the filter, chunked should cost no more than
Content-Length, as the filter hands Glance a Content-Length-framed body
and Glance's own chunked reader is not used.

Cases are interleaved (a round runs each case once, starting one case
later each round) ``--repeat`` times; the tables give medians. Images are
deleted after each upload and radosgw's garbage collected, so nothing
accumulates. Run from the repository root with a Glance venv's Python::

    .stack/venvs/glance-33/bin/python benchmarks/s3_upload.py
    .stack/venvs/glance-33/bin/python benchmarks/s3_upload.py \\
        --size 200M --repeat 1 --parts d

Not a test: nothing is asserted about timings.
"""

import argparse
import sys
import time
import uuid

import _common
from _common import GiB
from _common import MiB

from teststack import ceph
from teststack import glance as glance_stack
from teststack import venvs

# (name, chunked, URL prefix: which pipeline)
CASES = [
    ('chunked+header, without filter', True, _common.WITHOUT_PREFIX),
    ('chunked+header, with filter', True, _common.WITH_PREFIX),
    ('Content-Length+header, with filter', False, _common.WITH_PREFIX),
    ('Content-Length+header, without filter', False,
     _common.WITHOUT_PREFIX),
]
class Bench:
    def __init__(self, args, rgw, s3, bucket, image):
        self.args = args
        self.rgw = rgw
        self.s3 = s3
        self.bucket = bucket
        self.image = image
        self._servers = {}

    def glance(self, release):
        venv = venvs.glance_venv(release)
        return glance_stack.Glance(
            release,
            paste_ini=_common.dual_paste_ini(venv),
            default_backend='cloud', processes=1, threads=4,
            extra_conf={'DEFAULT': {'debug': False}},
            backends={'cloud': ('sizeaware_s3', {
                's3_store_host': self.rgw.endpoint,
                's3_store_access_key': self.rgw.access_key,
                's3_store_secret_key': self.rgw.secret_key,
                's3_store_bucket': self.bucket,
                's3_store_bucket_url_format': 'path',
            })})

    def server(self, release):
        if not self.args.reuse_server:
            return self.glance(release).start()
        if release not in self._servers:
            self._servers[release] = self.glance(release).start()
        return self._servers[release]

    def done_with(self, server):
        if not self.args.reuse_server:
            server.stop()

    def close(self):
        for server in self._servers.values():
            server.stop()

    def one(self, release, case):
        name, chunked, prefix = case
        size = self.args.size
        server = self.server(release)
        try:
            api = _common.GlanceAPI(server.url,
                                    server.identity_headers('bench'))
            image_id = api.create(prefix)
            api.get(image_id, prefix)  # warm-up done; measure from here
            master = _common.read_pid(server.workdir / 'uwsgi.pid')
            worker = _common.uwsgi_worker(master)
            _common.reset_peak_rss(worker)
            rss_before = _common.proc_status(worker, 'VmRSS')
            cpu = _common.cpu_seconds(worker)
            try:
                result = api.upload(image_id, self.image, size,
                                    chunked=chunked, prefix=prefix,
                                    piece=self.args.piece)
                peak = _common.proc_status(worker, 'VmHWM')
                cpu = _common.cpu_seconds(worker) - cpu
                if result.status != 204:
                    raise RuntimeError('%s: %r' % (name, result))
                info = api.get(image_id, prefix)
                if (info['status'], info['size']) != ('active', size):
                    raise RuntimeError('%s: image %s, size %s' % (
                        name, info['status'], info['size']))
                etag = self.s3.head_object(Bucket=self.bucket,
                                           Key=image_id)['ETag'].strip('"')
                parts = etag.split('-')[1] if '-' in etag else '1 (PUT)'
            finally:
                api.delete(image_id, prefix)
        finally:
            self.done_with(server)
        self.rgw.gc()
        return {'seconds': result.seconds, 'peak': peak, 'cpu': cpu,
                'rss_before': rss_before, 'parts': parts}


def run_part(bench, release, cases, repeat):
    results = {case[0]: [] for case in cases}
    for round_no in range(repeat):
        shift = round_no % len(cases)
        for case in cases[shift:] + cases[:shift]:
            figures = bench.one(release, case)
            results[case[0]].append(figures)
            _common.log('Glance %s  %-40s %6.1f s  CPU %5.1f s  peak %5.0f '
                        'MiB (before %4.0f MiB)  parts %s' % (
                            release, case[0], figures['seconds'],
                            figures['cpu'], figures['peak'] / MiB,
                            figures['rss_before'] / MiB, figures['parts']))
    return results


def report(release, results, size, baseline, title, piece):
    rows = []
    base = results.get(baseline)
    base_s = _common.median([r['seconds'] for r in base]) if base else None
    base_m = _common.median([r['peak'] for r in base]) if base else None
    for name, runs in results.items():
        if not runs:
            continue
        seconds = _common.median([r['seconds'] for r in runs])
        peak = _common.median([r['peak'] for r in runs])
        rows.append([
            name,
            '%.1f' % seconds,
            '%.0f' % (size / MiB / seconds),
            '%.1f' % _common.median([r['cpu'] for r in runs]),
            '%.0f' % (peak / MiB),
            '%.0f' % _common.median([r['rss_before'] / MiB for r in runs]),
            ', '.join(sorted({str(r['parts']) for r in runs})),
            '%.2f' % (seconds / base_s) if base_s else '-',
            '%.2f' % (peak / base_m) if base_m else '-',
            ' '.join('%.1f' % r['seconds'] for r in runs),
            len(runs),
        ])
    return _common.table(
        ['case', 's', 'MiB/s', 'worker CPU s', 'worker peak MiB',
         'RSS before MiB', 'S3 parts', 'time vs base', 'peak vs base',
         'all runs (s)', 'runs'],
        rows, title='%s: Glance %s, S3 store on radosgw, %s body, chunks '
                    'of %s, medians (base: %s)' % (
                        title, release, _common.human(size),
                        _common.human(piece), baseline))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    _common.add_upload_options(parser, 3, 'uploads per case')
    parser.add_argument('--parts', default='c,d',
                        help='c (Glance 30), d (Glance 33); default c,d')
    parser.add_argument('--release-c', default='30')
    parser.add_argument('--release-d', default='33')
    parser.add_argument('--skip-without-filter-chunked', action='store_true',
                        help='skip the slow chunked upload without the '
                             'filter in part c')
    parser.add_argument('--reuse-server', action='store_true',
                        help='one Glance per release instead of one per '
                             'upload (peak RSS then depends on history)')
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(',') if p.strip()]
    image = _common.image_file(args.size, args.image)

    import boto3
    started = time.monotonic()
    rgw = ceph.RadosGW(osd_size=max(20 * GiB, 4 * args.size))
    rgw.start()
    _common.log('radosgw up at %s in %.0f s' % (
        rgw.endpoint, time.monotonic() - started))
    tables = []
    bench = None
    try:
        s3 = boto3.client('s3', endpoint_url=rgw.endpoint,
                          aws_access_key_id=rgw.access_key,
                          aws_secret_access_key=rgw.secret_key,
                          region_name='us-east-1')
        bucket = 'bench-%s' % uuid.uuid4().hex[:12]
        s3.create_bucket(Bucket=bucket)
        bench = Bench(args, rgw, s3, bucket, image)
        if 'c' in parts:
            cases = list(CASES)
            if args.skip_without_filter_chunked:
                cases = cases[1:]
            results = run_part(bench, args.release_c, cases, args.repeat)
            tables.append(report(args.release_c, results, args.size,
                                 'Content-Length+header, with filter',
                                 '(c)', args.piece))
        if 'd' in parts:
            results = run_part(bench, args.release_d, list(CASES),
                               args.repeat)
            tables.append(report(args.release_d, results, args.size,
                                 'Content-Length+header, with filter',
                                 '(d)', args.piece))
        left = s3.list_objects_v2(Bucket=bucket).get('KeyCount', 0)
        if left:
            _common.log('%d objects left in %s' % (left, bucket))
    finally:
        if bench is not None:
            bench.close()
        rgw.stop()
    _common.print_tables(tables)
    return 0


if __name__ == '__main__':
    sys.exit(main())
