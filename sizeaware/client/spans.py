"""Range arithmetic: what is missing, and how to split it among streams.

Spans are ``(start, stop)`` pairs, ``stop`` exclusive; the status
document's ``ranges_held`` pairs are inclusive and converted on the way in.
"""


def missing(held, size):
    """The spans of ``[0, size)`` not covered by ``held``, the inclusive
    ``[first, last]`` pairs a status document lists."""
    gaps = []
    position = 0
    for first, last in sorted((int(a), int(b)) for a, b in held):
        if first > position:
            gaps.append((position, min(first, size)))
        position = max(position, last + 1)
    if position < size:
        gaps.append((position, size))
    return [(a, b) for a, b in gaps if b > a]


def runs(indices, unit, size):
    """Contiguous spans covering the units numbered ``indices`` (units of
    ``unit`` bytes; the last may be shorter)."""
    spans = []
    for index in sorted(set(indices)):
        start, stop = index * unit, min((index + 1) * unit, size)
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], stop)
        else:
            spans.append((start, stop))
    return spans


def split(spans, parts, align):
    """Cut ``spans`` into at most about ``parts`` spans of similar length,
    on multiples of ``align`` (so that each stream covers whole chunks
    where it can), never splitting a span into pieces under ``align``."""
    spans = [(a, b) for a, b in spans if b > a]
    total = sum(b - a for a, b in spans)
    if parts <= 1 or not total:
        return spans
    target = max(align, -(-total // parts))
    target = -(-target // align) * align
    out = []
    for start, stop in spans:
        position = start
        while stop - position > target:
            cut = (position + target) // align * align
            if cut <= position:
                cut = position + target
            out.append((position, cut))
            position = cut
        out.append((position, stop))
    return out


def total(spans):
    return sum(b - a for a, b in spans)
