"""The closing lines of ``tools/run-tests``.

    python3 -m teststack.summary PYTEST_XML TEMPEST_JSON

The last line counts the whole suite, pytest's tests and the tempest run
with the filter, as ``N passed, N failed, N skipped`` (CI reads it); a
missing or unreadable report counts as one failed test. The line before it
names the flaky tempest tests (failed, then passed when run again alone):
they count neither as passed nor as failed, and do not fail the run.
"""

import json
import sys
import xml.etree.ElementTree as ET


def pytest_counts(path) -> dict:
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    for suite in ET.parse(path).getroot().iter('testsuite'):
        failed = int(suite.get('failures', 0)) + int(suite.get('errors', 0))
        skipped = int(suite.get('skipped', 0))
        counts['passed'] += int(suite.get('tests', 0)) - failed - skipped
        counts['failed'] += failed
        counts['skipped'] += skipped
    return counts


def tempest_counts(path) -> tuple:
    """The counts of the run with the filter, and its flaky test ids."""
    with open(path) as f:
        run = json.load(f)['runs']['with_filter']
    flaky = sorted(t for t, v in run['tests'].items()
                   if v['outcome'] == 'flaky')
    counts = {k: run['counts'][k] for k in ('passed', 'failed', 'skipped')}
    return counts, flaky


def main(argv=None) -> int:
    pytest_xml, tempest_json = (argv or sys.argv[1:])[:2]
    total = {'passed': 0, 'failed': 0, 'skipped': 0}
    flaky = []
    try:
        counts = pytest_counts(pytest_xml)
    except (OSError, ET.ParseError):
        counts = {'failed': 1}
    for key, value in counts.items():
        total[key] += value
    try:
        counts, flaky = tempest_counts(tempest_json)
    except (OSError, KeyError, ValueError):
        counts = {'failed': 1}
    for key, value in counts.items():
        total[key] += value
    print('%d flaky (failed, then passed alone; not counted as passed)%s'
          % (len(flaky), ': ' + ', '.join(flaky) if flaky else ''))
    print('%(passed)d passed, %(failed)d failed, %(skipped)d skipped' % total)
    return 0


if __name__ == '__main__':
    sys.exit(main())
