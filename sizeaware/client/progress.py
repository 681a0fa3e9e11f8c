"""A thread-safe progress bar (bytes, rate, ETA) on stderr, silent when
stderr is not a terminal."""

import sys
import threading

import tqdm


class Progress:
    def __init__(self, total, initial=0, description='', enabled=None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._bar = tqdm.tqdm(total=total, initial=initial, unit='B',
                              unit_scale=True, unit_divisor=1024,
                              desc=description, disable=not enabled,
                              file=sys.stderr, dynamic_ncols=True)

    def update(self, count):
        with self._lock:
            self._bar.update(count)

    def close(self):
        with self._lock:
            self._bar.close()
