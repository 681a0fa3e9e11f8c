"""The rules of :mod:`sizeaware.resume`, which the store drivers' restarting
reads and the transfer client's downloads both follow."""

import pytest

from sizeaware import resume

N = 1000
ETAG = '"v1"'


class Changed(Exception):
    pass


class Mismatch(Exception):
    pass


class Ignored(Mismatch):
    pass


ERRORS = resume.Errors(changed=Changed, mismatch=Mismatch, ignored=Ignored)


def part(status, content_range=None, etag=ETAG, length=None):
    return resume.Part(status, etag=etag, content_range=content_range,
                       content_length=length)


def test_a_want_asks_for_its_range_pinned_to_its_etag():
    assert resume.Want(10, 100, ETAG).headers() == {
        'Range': 'bytes=10-99', 'If-Match': ETAG}
    assert resume.Want(10, None).headers() == {'Range': 'bytes=10-'}
    assert resume.Want(0, N, whole=True).headers() == {}
    assert resume.Want(0, N, ETAG, whole=True).headers() == {
        'If-Match': ETAG}


@pytest.mark.parametrize('want, answer, total, learnt', [
    (resume.Want(10, 100, ETAG), part(206, 'bytes 10-99/1000'), N, N),
    (resume.Want(10, 100), part(206, 'bytes 10-99/1000', None), None, N),
    (resume.Want(990, None), part(206, 'bytes 990-999/1000'), None, N),
    (resume.Want(0, None, whole=True), part(200, length=N), None, N),
    (resume.Want(0, N, ETAG, whole=True), part(200, length=N), N, N),
    (resume.Want(0, N, whole=True), part(200, length=None), N, N),
])
def test_exactly_what_was_asked_is_spliced(want, answer, total, learnt):
    assert resume.check(want, answer, total, ERRORS) == learnt


@pytest.mark.parametrize('want, answer, total, error', [
    # The pinned ETag no longer matches: the object changed.
    (resume.Want(10, 100, ETAG), part(412, etag=None), N, Changed),
    (resume.Want(10, 100, ETAG), part(206, 'bytes 10-99/1000', '"v2"'), N,
     Changed),
    (resume.Want(10, 100, ETAG), part(206, 'bytes 10-99/1000', None), N,
     Changed),
    (resume.Want(10, 100, ETAG), part(200, etag='"v2"'), N, Changed),
    # A 200 to a range, another range, another total: never spliced.
    (resume.Want(10, 100, ETAG), part(200, length=N), N, Ignored),
    (resume.Want(10, 100, ETAG), part(206, 'bytes 0-99/1000'), N, Mismatch),
    (resume.Want(10, 100, ETAG), part(206, 'bytes 10-999/1000'), N,
     Mismatch),
    (resume.Want(10, 100, ETAG), part(206, 'bytes 10-99/1001'), N, Mismatch),
    (resume.Want(10, 100, ETAG), part(206, 'bytes 10-99/*'), N, Mismatch),
    (resume.Want(10, 100, ETAG), part(206, None), N, Mismatch),
    (resume.Want(10, 100, ETAG), part(416), N, Mismatch),
    (resume.Want(10, 100, ETAG), part(204), N, Mismatch),
    (resume.Want(0, N, whole=True), part(206, 'bytes 0-999/1000'), N,
     Mismatch),
    (resume.Want(0, N, whole=True), part(200, length=N - 1), N, Mismatch),
])
def test_anything_else_is_refused(want, answer, total, error):
    with pytest.raises(error) as caught:
        resume.check(want, answer, total, ERRORS, 'image 7')
    assert type(caught.value) is error
    assert str(caught.value).startswith('image 7 (')


def test_a_200_to_a_range_is_a_mismatch_unless_told_otherwise():
    errors = resume.Errors(changed=Changed, mismatch=Mismatch)
    with pytest.raises(Mismatch, match='not spliced') as caught:
        resume.check(resume.Want(10, 100), part(200), N, errors)
    assert type(caught.value) is Mismatch


def test_the_retryable_statuses_are_one_set():
    assert resume.RETRYABLE_STATUSES == {408, 429, 500, 502, 503, 504}
    assert not any(resume.retryable(s) for s in (412, 416, 501, 505, 404))


@pytest.mark.parametrize('etag, pinned', [
    ('"a"', '"a"'), ('W/"a"', None), ('', None), (None, None)])
def test_only_a_strong_etag_pins(etag, pinned):
    assert resume.strong(etag) == pinned


def backoff(attempts=3, sleeps=None):
    return resume.Backoff(
        attempts, 1.0, 5.0, sleep=(sleeps if sleeps is not None
                                   else []).append,
        give_up=lambda failures, reason: RuntimeError(
            'gave up after %d: %s' % (failures, reason)))


def test_the_budget_is_of_failures_in_a_row():
    sleeps = []
    budget = backoff(sleeps=sleeps)
    for _ in range(3):
        budget.failed('reset')
    with pytest.raises(RuntimeError, match='after 3: reset'):
        budget.failed('reset')
    assert len(sleeps) == 3


def test_progress_makes_the_budget_whole_again():
    sleeps = []
    budget = backoff(sleeps=sleeps)
    for _ in range(10):
        budget.failed('reset')
        budget.failed('503')
        budget.progressed()
    assert budget.failures == 0
    # Each wait between half and all of its doubling: 1, 2, 1, 2...
    for slept, longest in zip(sleeps, [1.0, 2.0] * 10):
        assert longest / 2 <= slept <= longest


def test_waits_double_up_to_the_cap():
    assert [resume.delay(1.0, i, 5.0) for i in range(6)] == [
        0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    sleeps = []
    budget = backoff(attempts=10, sleeps=sleeps)
    for _ in range(6):
        budget.failed('x')
    assert 2.5 <= sleeps[-1] <= 5.0


def test_no_retries_gives_up_at_the_first_failure():
    with pytest.raises(RuntimeError, match='after 0'):
        backoff(attempts=0).failed('reset')
