"""Download throughput through Glance with the download filter off, on,
and on with ``verify_download``.

One Glance 33 under uwsgi (2 processes of 8 threads by default), sqlite
and the filesystem store; its paste ini serves the same pipeline three
ways, so every mode runs in the same workers, with the same configuration
and the same stored image::

    /off/...     without download
    /on/...      with download (verify_download off, its default)
    /verify/...  with download, verify_download = true

The image (1 GiB of random data by default) is uploaded once. Each round
downloads it whole once per mode, in an order that rotates from round to
round; the client (the library's connection, ``_common.download``) reads
the body 1 MiB at a time and keeps nothing. A mode's throughput is the
median over the rounds; the ratio is against ``off`` (the paired ratio is
the median of the per-round ratios). The uwsgi workers' CPU time
(``utime + stime`` from ``/proc``) is taken around each download. Run from
the repository root::

    .stack/venvs/tests/bin/python benchmarks/download_filter.py
    .stack/venvs/tests/bin/python benchmarks/download_filter.py \\
        --size 64M --repeat 3

Not a test: nothing is asserted about timings.
"""

import argparse
import os
import sys

import _common
from _common import MiB

from teststack import glance as glance_stack
from teststack import venvs

MODES = ('off', 'on', 'verify')
_PIPELINES = {'on': 'api', 'off': 'api-off', 'verify': 'api-verify'}
VERIFY_FILTER = 'download-verify'


def paste_ini(venv):
    """The release's shipped ini with our filters (as ``teststack.glance``
    derives it), its ``[composite:api]`` copied without ``download`` and
    with a verifying ``download``, each copy under its own URL prefix."""
    shipped = glance_stack.shipped_paste_ini(venv).read_text()
    text = glance_stack.build_paste_ini(shipped, with_filter=True)
    api = dict(glance_stack.split_sections(text))['composite:api']
    name = glance_stack.DOWNLOAD_NAME

    def copy(title, replacement):
        """``[composite:api]`` under ``title``, ``download`` replaced by
        ``replacement`` in every pipeline (dropped if None)."""
        lines = [title]
        for line in api[1:]:
            key, sep, value = line.partition('=')
            if sep and not key.strip().startswith(('paste.', '#', ';')):
                words = [replacement if w == name else w
                         for w in value.split()]
                line = '%s= %s' % (key, ' '.join(w for w in words if w))
            lines.append(line)
        return lines

    root = 'composite:glance-api-%s' % glance_stack.TEST_FLAVOR
    out = []
    for section, lines in glance_stack.split_sections(text):
        if section == root:
            body = [line for line in lines[1:] if line.strip()]
            lines = [lines[0]] + body + [
                '/%s: %s' % (mode, pipeline)
                for mode, pipeline in sorted(_PIPELINES.items())] + ['']
        out.extend(lines)
    out += ['', '# benchmark only: [composite:api] without download']
    out += copy('[composite:api-off]', None)
    out += ['', '# benchmark only: [composite:api] verifying downloads']
    out += copy('[composite:api-verify]', VERIFY_FILTER)
    out += ['', '[filter:%s]' % VERIFY_FILTER, 'use = egg:sizeaware#download',
            'verify_download = true', '']
    off = copy('[composite:api-off]', None)
    if any(name in line.partition('=')[2].split() for line in off):
        raise RuntimeError('api-off still has %s' % name)
    return '\n'.join(out)


def download(url, path, headers):
    """GET ``path`` whole; ``(seconds, bytes)``."""
    status, seconds, received = _common.download(url, path, headers)
    if status != 200:
        raise RuntimeError('download via %s: %d' % (path, status))
    return seconds, received


def workers_cpu(workers):
    return sum(_common.cpu_seconds(pid) for pid in workers)


def run(args, image):
    venv = venvs.glance_venv(args.release)
    glance = glance_stack.Glance(
        args.release, paste_ini=paste_ini(venv), processes=args.processes,
        threads=args.threads, extra_conf={'DEFAULT': {'debug': False}})
    results = {mode: [] for mode in MODES}
    loads = []
    glance.start()
    try:
        identity = glance.identity_headers('bench')
        api = _common.GlanceAPI(glance.url, identity)
        workers = _common.children(
            _common.read_pid(glance.workdir / 'uwsgi.pid'))
        image_id = api.create('/on')
        result = api.upload(image_id, image, args.size, chunked=False,
                            prefix='/on')
        if result.status != 204:
            raise RuntimeError('upload: %r' % result)
        for mode in MODES:  # warm up every pipeline
            download(glance.url, '/%s/v2/images/%s/file' % (mode, image_id),
                     identity)
        for round_no in range(args.repeat):
            order = MODES[round_no % 3:] + MODES[:round_no % 3]
            for mode in order:
                loads.append(os.getloadavg()[0])
                cpu = workers_cpu(workers)
                seconds, received = download(
                    glance.url, '/%s/v2/images/%s/file' % (mode, image_id),
                    identity)
                cpu = workers_cpu(workers) - cpu
                if received != args.size:
                    raise RuntimeError('%s: %d bytes of %d' % (
                        mode, received, args.size))
                results[mode].append((seconds, cpu))
                _common.log('round %d %-6s %6.2f s %6.0f MiB/s  workers CPU '
                            '%5.2f s  (load %.1f)' % (
                                round_no + 1, mode, seconds,
                                args.size / MiB / seconds, cpu, loads[-1]))
    finally:
        glance.stop()
    return results, loads


def report(args, results, loads):
    mib = args.size / MiB
    per_round = {mode: [mib / s for s, _ in results[mode]] for mode in MODES}
    rows = []
    for mode in MODES:
        median = _common.median(per_round[mode])
        ratio = median / _common.median(per_round['off'])
        paired = _common.median([a / b for a, b in zip(per_round[mode],
                                                       per_round['off'])])
        cpu = sum(c for _, c in results[mode]) * 1024 / (
            mib * len(results[mode]))
        rows.append([mode, '%.0f' % median, '%.3f' % ratio,
                     '%.3f' % paired, '%.2f' % cpu,
                     ' '.join('%.0f' % r for r in per_round[mode])])
    title = (
        'Glance %s under uwsgi (%d processes x %d threads), sqlite, '
        'filesystem store; whole downloads of a %s image, one at a time, '
        '%d rounds, medians; ratio = throughput / throughput with the '
        'filter off (paired: median of the per-round ratios); CPU: the uwsgi '
        'workers\' user+system time per GiB downloaded; load average %.1f '
        'to %.1f' % (args.release, args.processes, args.threads,
                     _common.human(args.size), args.repeat, min(loads),
                     max(loads)))
    return [_common.table(['download filter', 'MiB/s', 'ratio',
                           'paired ratio', 'CPU s/GiB', 'rounds (MiB/s)'],
                          rows, title=title)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    _common.add_download_options(parser, '1G', 5)
    return _common.run_on_image(parser, argv, run, report)


if __name__ == '__main__':
    sys.exit(main())
