"""The project's tooling: stack control, the load test, the fault tests and the ledger audit.

Entry points live one folder up (scripts/loadtest, scripts/crash-test, ...); each puts
scripts/ on sys.path once and imports from here. Only the standard library is needed to
import this package; k6, matplotlib and schemathesis come from the virtual environment that
venv.py creates (pinned in scripts/requirements.txt).
"""
import os

PACKAGE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(PACKAGE)
REPO = os.path.dirname(SCRIPTS)


def log(msg=""):
    print(msg, flush=True)
