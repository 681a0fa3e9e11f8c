"""Sets of byte ranges, as sorted lists of half-open ``(start, end)`` pairs.

A session's held bytes are such a set: writes arrive out of order and in
parallel, so a count (what ovirt-imageio keeps) cannot say which bytes are
missing; a set can.
"""


def add(held, start, end):
    """``held`` with ``[start, end)`` added, merged and sorted."""
    if start >= end:
        return list(held)
    out = []
    for s, e in held:
        if e < start or s > end:
            out.append((s, e))
        else:
            start, end = min(s, start), max(e, end)
    out.append((start, end))
    return sorted(out)


def overlaps(held, start, end):
    """The parts of ``[start, end)`` that ``held`` already holds."""
    return [(max(s, start), min(e, end)) for s, e in held
            if s < end and e > start]


def covers(held, start, end):
    """Whether ``held`` holds every byte of ``[start, end)``."""
    return start >= end or any(s <= start and end <= e for s, e in held)


def total(held):
    """How many bytes ``held`` holds."""
    return sum(e - s for s, e in held)


def is_complete(held, size):
    """Whether ``held`` is exactly every byte of a ``size``-byte image."""
    return list(held) == [(0, size)]


def header_value(held):
    """``held`` as a ``Range`` header value, ``bytes=0-99,200-299`` (last
    byte inclusive, as in HTTP), or None when nothing is held."""
    if not held:
        return None
    return 'bytes=' + ','.join('%d-%d' % (s, e - 1) for s, e in held)
