"""A subunit v2 stream on stdin as JSON on stdout: ``{test id: {"status",
"details": {name: text}, "duration": seconds or null}}``.

Run by :mod:`teststack.tempest` with the tempest venv's interpreter (it
needs python-subunit and testtools), by path.
"""

import json
import sys


def main():
    import subunit
    import testtools

    tests = {}

    def on_test(test):
        details = {}
        for name, content in test['details'].items():
            try:
                details[name] = ''.join(content.iter_text())
            except Exception:  # binary attachments
                pass
        start, stop = (test['timestamps'] + [None, None])[:2]
        tests[test['id']] = {
            'status': test['status'], 'details': details,
            'duration': ((stop - start).total_seconds()
                         if start and stop else None),
        }

    stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer,
                                              non_subunit_name='stdout')
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()
    json.dump(tests, sys.stdout)


if __name__ == '__main__':
    main()
