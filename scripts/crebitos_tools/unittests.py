"""The tooling's unit tests (crebitos_tools/tests), each skipped test counted as a skip of the
suite (skips.py), so that a test that needs nginx or k6 and found none is listed by
scripts/test instead of passing silently. Exit status: 0 all passed, 1 a failure."""
import os
import sys
import unittest

from . import PACKAGE, SCRIPTS
from .skips import skipped


def main():
    suite = unittest.defaultTestLoader.discover(os.path.join(PACKAGE, "tests"), top_level_dir=SCRIPTS)
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    for test, why in result.skipped:
        skipped("unit test %s" % test.id().replace("crebitos_tools.tests.", ""), why)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
