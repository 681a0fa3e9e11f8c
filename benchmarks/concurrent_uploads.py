"""Upload throughput at several concurrent clients, with and without
``sizeaware``, through one Glance as deployed.

One Glance 33 under uwsgi (2 processes of 8 threads by default) with its
database on PostgreSQL and the filesystem store; its paste ini serves
``/with/...`` through the pipeline with the filter and ``/without/...``
through the same pipeline without it (``_common.dual_paste_ini``), so both
modes run in the same workers, with the same configuration and store.

At each level (1, 4 and 16 clients by default), a round creates one image
per client, then the clients start together (a barrier) and each uploads
its image with a Content-Length body carrying ``X-OpenStack-Image-Size``;
the round's throughput is the bytes of all uploads over the time from the
first request to the last answer. Each image is then checked (``active``,
right size) and deleted. Both modes run back to back in each round,
alternating which goes first. The table gives medians, the with/without
throughput ratio, and the uwsgi workers' CPU time (``utime + stime`` of
every worker, from ``/proc/<pid>/stat``, before and after each batch).
Run from the repository root::

    .stack/venvs/tests/bin/python benchmarks/concurrent_uploads.py
    .stack/venvs/tests/bin/python benchmarks/concurrent_uploads.py \\
        --levels 1,4 --repeat 3 --size 8M

Not a test: nothing is asserted about timings.
"""

import argparse
import concurrent.futures
import os
import sys
import threading
import time

import _common
from _common import MiB

from teststack import glance as glance_stack
from teststack import postgres as postgres_stack
from teststack import venvs

MODES = ('with', 'without')


def _sides(round_no):
    """Alternate which mode goes first, so drift hits both equally."""
    return MODES if round_no % 2 == 0 else MODES[::-1]


def workers_cpu(workers):
    return sum(_common.cpu_seconds(pid) for pid in workers)


def batch(api, pool, workers, mode, clients, image, size):
    """``clients`` uploads at once through ``/<mode>``; (seconds, worker
    CPU seconds)."""
    prefix = '/' + mode
    image_ids = list(pool.map(lambda _: api.create(prefix), range(clients)))
    barrier = threading.Barrier(clients)

    def one(image_id):
        barrier.wait(timeout=60)
        start = time.perf_counter()
        result = api.upload(image_id, image, size, chunked=False,
                            prefix=prefix)
        return start, time.perf_counter(), result

    try:
        cpu = workers_cpu(workers)
        futures = [pool.submit(one, image_id) for image_id in image_ids]
        try:
            runs = [future.result() for future in futures]
        finally:
            barrier.abort()
        cpu = workers_cpu(workers) - cpu
        for _, _, result in runs:
            if result.status != 204:
                raise RuntimeError('upload via %s: %r' % (prefix, result))
        for image_id in image_ids:
            info = api.get(image_id, prefix)
            if (info['status'], info['size']) != ('active', size):
                raise RuntimeError('image after upload: %s %s'
                                   % (info['status'], info['size']))
        seconds = (max(end for _, end, _ in runs) -
                   min(start for start, _, _ in runs))
        return seconds, cpu
    finally:
        for image_id in image_ids:
            api.delete(image_id, prefix)


def run(args, image):
    venv = venvs.glance_venv(args.release)
    postgres = postgres_stack.Postgres()
    glance = None
    results = {}
    loads = []
    postgres.start()
    try:
        glance = glance_stack.Glance(
            args.release, paste_ini=_common.dual_paste_ini(venv),
            processes=args.processes, threads=args.threads,
            database_url=postgres.create_database('bench_concurrent'),
            extra_conf={'DEFAULT': {'debug': False}})
        glance.start()
        api = _common.GlanceAPI(glance.url, glance.identity_headers('bench'))
        workers = _common.children(
            _common.read_pid(glance.workdir / 'uwsgi.pid'))
        if len(workers) != args.processes:
            raise RuntimeError('expected %d uwsgi workers, found %r'
                               % (args.processes, workers))
        warm_up = 2 * args.processes
        # One thread per client: a batch's barrier waits for all of them.
        with concurrent.futures.ThreadPoolExecutor(
                max(args.levels + [warm_up])) as pool:
            for mode in MODES:  # warm up every worker and both pipelines
                batch(api, pool, workers, mode, warm_up, image, args.size)
            for round_no in range(args.repeat):
                for clients in args.levels:
                    for mode in _sides(round_no):
                        loads.append(os.getloadavg()[0])
                        seconds, cpu = batch(api, pool, workers, mode,
                                             clients, image, args.size)
                        results.setdefault((clients, mode), []).append(
                            (seconds, cpu))
                        _common.log(
                            'round %d, %2d clients, %-7s %6.2f s  %6.0f '
                            'MiB/s  workers CPU %5.2f s  (load %.1f)'
                            % (round_no + 1, clients, mode, seconds,
                               clients * args.size / MiB / seconds, cpu,
                               loads[-1]))
    finally:
        if glance is not None:
            glance.stop()
        postgres.stop()
    return results, loads


def report(args, results, loads):
    """Medians; ratios are with/without (> 1: faster with the filter)."""
    rows = []
    for clients in args.levels:
        mib = clients * args.size / MiB
        # Per round: MiB/s. CPU is counted in clock ticks (10 ms): the
        # workers' time per GiB is taken over all rounds together.
        per_round = {mode: [(mib / seconds,) for seconds, _ in
                            results[(clients, mode)]] for mode in MODES}
        mibps = {mode: _common.median([r[0] for r in per_round[mode]])
                 for mode in MODES}
        cpu = {mode: sum(c for _, c in results[(clients, mode)]) * 1024 /
               (mib * len(results[(clients, mode)])) for mode in MODES}
        ratio = mibps['with'] / mibps['without']
        paired = _common.median([a[0] / b[0] for a, b in
                                 zip(per_round['with'],
                                     per_round['without'])])
        rows.append([
            clients,
            '%.0f' % mibps['without'], '%.0f' % mibps['with'],
            '%.3f' % ratio, '%.3f' % paired,
            'yes' if min(ratio, paired) >= 0.99 else 'NO',
            '%.2f' % cpu['without'], '%.2f' % cpu['with'],
            '%.3f' % (cpu['without'] / cpu['with']) if cpu['with'] else '-',
            ' '.join('%.0f' % r[0] for r in per_round['without']),
            ' '.join('%.0f' % r[0] for r in per_round['with']),
        ])
    cpu_total = {mode: sum(r[1] for (_, m), runs in results.items()
                           if m == mode for r in runs) for mode in MODES}
    title = (
        'Glance %s under uwsgi (%d processes x %d threads), PostgreSQL, '
        'filesystem store; Content-Length uploads of %s with the header, '
        '%d rounds, medians; ratio = throughput with / without the filter '
        '(paired: median of the per-round ratios); CPU: the uwsgi workers\' '
        'user+system time per GiB uploaded, over all rounds, ratio without '
        '/ with; load '
        'average %.1f to %.1f'
        % (args.release, args.processes, args.threads,
           _common.human(args.size), args.repeat, min(loads), max(loads)))
    table = _common.table(
        ['clients', 'MiB/s without', 'MiB/s with', 'ratio', 'paired ratio',
         '>= 0.99', 'CPU s/GiB without', 'CPU s/GiB with', 'CPU ratio',
         'rounds without (MiB/s)', 'rounds with (MiB/s)'],
        rows, title=title)
    return ['%s\n\nWorkers\' CPU time over all timed rounds: %.1f s with '
            'the filter, %.1f s without.' % (table, cpu_total['with'],
                                             cpu_total['without'])]


def levels(text):
    """``--levels``: numbers separated by commas."""
    return [int(n) for n in text.split(',') if n.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    _common.add_upload_options(parser, 7, 'rounds')
    parser.set_defaults(size=32 * MiB)
    parser.add_argument('--levels', default='1,4,16', type=levels,
                        help='numbers of concurrent clients (default '
                             '1,4,16)')
    return _common.run_on_image(parser, argv, run, report)


if __name__ == '__main__':
    sys.exit(main())
