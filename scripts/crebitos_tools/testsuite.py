"""The project's test command, scripts/test (the README and CI run exactly this).

  1. installs what the tests need (as root, with apt-get; otherwise says what to install)
  2. swift build + swift test: the ledger rules, the ledger's behaviour on both engines
     (SQLite on temp files, PostgreSQL on a throwaway server the tests start), the HTTP layer
     in-process, and two real server processes sharing one database
  3. the Benchmarks/ package compiles; the tooling's own unit tests; scripts/stack-test on
     SQLite and on PostgreSQL (the native stack on free ports, through nginx); the PostgreSQL
     store's tests behind PgBouncer (scripts/pooler-test)
  4. faults and bad input (docs/FAULTS.md), each on a stack of its own; all run even if
     one fails

    scripts/test [--swift-only | --no-faults]        exits non-zero if anything failed
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import REPO, skips
from .skips import SKIPPED
from .prerequisites import need
from .processes import die

FAULT_TESTS = [
    ("hostile input through nginx and straight to an instance", ["badinput-test"]),
    ("crash under load, short form", ["crash-test", "--short"]),
    ("the same on the PostgreSQL store, whose server it also kills",
     ["crash-test", "--short", "--store", "postgres"]),
    ("an instance frozen while it holds the write lock", ["freeze-test"]),
    ("the disk slowed under load: reads unaffected, writes batched", ["slowdisk-test"]),
    ("backup under load, and restore", ["backup-test"]),
    ("the OpenAPI contract, with schemathesis", ["schemathesis-test", "--max-time", "60"]),
]


SQLITE_ONLY_CHECK = r"""
swift build -c release --product crebitos --disable-default-traits || exit 1
out=$("$(swift build -c release --show-bin-path)/crebitos" --database postgres://db.internal/rinha 2>&1)
rc=$?
echo "$out" | tail -3
[ "$rc" -ne 0 ] && grep -q "built without the PostgreSQL store" <<<"$out"
"""

skipped_steps = []


def step(title, argv, check=True, env=None):
    """Runs one step; a failure ends the suite when check, else it is returned. A step that
    exits SKIPPED is neither: it is listed in the final summary."""
    print("== %s (%s)" % (title, " ".join(argv)), flush=True)
    rc = subprocess.run(argv, cwd=REPO, env=env).returncode
    if rc == SKIPPED:
        skipped_steps.append(title)
        return True
    if check and rc != 0:
        sys.exit(rc)
    return rc == 0


def install_prerequisites():
    """The Swift toolchain is not a Debian package and must be there already; GRDB builds
    against the system SQLite's headers; the PostgreSQL store's tests start a throwaway
    server from Debian's binaries (unless CREBITOS_TEST_POSTGRES_URL names one), and
    need() keeps Debian's own cluster from starting."""
    if not shutil.which("swift") and os.access("/opt/swift/usr/bin/swift", os.X_OK):
        os.environ["PATH"] = "/opt/swift/usr/bin:" + os.environ["PATH"]
    if not shutil.which("swift"):
        die("the Swift toolchain (6.1 or later) is not on PATH: see https://swift.org/install")
    need("libsqlite3-dev", lambda: os.path.exists("/usr/include/sqlite3.h"), "SQLite's headers")
    if not os.environ.get("CREBITOS_TEST_POSTGRES_URL"):
        need("postgresql", lambda: glob.glob("/usr/lib/postgresql/*/bin/initdb"),
             "PostgreSQL's server, for the tests (or set CREBITOS_TEST_POSTGRES_URL)")
    # Before the tooling's unit tests, one of which renders nginx.conf and has nginx check it
    # (stack-up would install it only later).
    need("nginx", lambda: shutil.which("nginx"), "nginx, for the stack and the tooling's tests")


def main(argv):
    swift_only, faults = "--swift-only" in argv, "--no-faults" not in argv
    install_prerequisites()
    # The two-process tests start the `crebitos` binary this build puts next to the tests.
    step("swift build, with the tests", ["swift", "build", "--build-tests"])
    # Package.resolved is committed so every build resolves the same versions: a manifest
    # change that moved a pin must come with its Package.resolved.
    if shutil.which("git") and subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO,
                                              capture_output=True).returncode == 0:
        if subprocess.run(["git", "diff", "--quiet", "--", "Package.resolved"], cwd=REPO).returncode != 0:
            subprocess.run(["git", "diff", "--stat", "--", "Package.resolved"], cwd=REPO)
            die("Package.resolved differs from the committed one: commit what 'swift package resolve' wrote")
    step("swift test: XCTest, then Swift Testing (the ledger suite on both engines)",
         ["swift", "test", "--skip-build"])
    if swift_only:
        return 0
    # Built, not run (timings belong in docs/BENCHMARKS.md, not in a pass/fail).
    step("the per-stage benchmarks compile", ["swift", "build", "--package-path", "Benchmarks"])
    step("the tooling's virtual environment (.venv, pinned in scripts/requirements.txt)",
         [sys.executable, "scripts/crebitos_tools/venv.py"])
    step("the tooling's unit tests (a skipped one is listed below)",
         [".venv/bin/python", "-m", "crebitos_tools.unittests"], env=dict(os.environ, PYTHONPATH="scripts"))
    # What scripts/stack-up and docker-compose.yml build: the server without the package trait
    # PostgreSQL. It must compile, and refuse a PostgreSQL URL rather than create a file.
    step("the SQLite-only server builds, and refuses a PostgreSQL URL", ["bash", "-c", SQLITE_ONLY_CHECK])
    # One release build with both stores for every stack below (stack-up alone would build
    # the SQLite-only server for a SQLite stack).
    step("the release server, with both stores", ["swift", "build", "-c", "release", "--product", "crebitos"])
    step("native stack integration test", ["scripts/stack-test", "--no-build"])
    step("the same on the PostgreSQL store", ["scripts/stack-test", "--store", "postgres", "--no-build"])
    # The PostgreSQL store's tests again, every connection through a throwaway PgBouncer in
    # transaction mode (docs/SCALING.md); a skip if pgbouncer cannot be installed here.
    step("the PostgreSQL store's tests behind PgBouncer (transaction mode)",
         ["scripts/pooler-test", "--skip-build", "--filter", "Postgres|postgres"])
    if not faults:
        return 0
    # The fault tests run a private copy of that release binary.
    ok = [step(title, ["scripts/" + argv[0], "--no-build"] + argv[1:], check=False)
          for title, argv in FAULT_TESTS]
    ok.append(step("coverage-guided fuzzing of the request decoder",
                   ["scripts/fuzz-decoder", "--seconds", "30", "--seed", "20240117"], check=False))
    # The compose files as the contest runs them, when a container engine is here (docker
    # compose, podman-compose, or $COMPOSE); without one compose-test says so and is a skip.
    ok.append(step("docker-compose.yml and docker-compose.postgres.yml under a container engine",
                   ["scripts/compose-test"], check=False))
    return 0 if all(ok) else 1


def summary(rc, started):
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    left_out = ["%s (the whole step)" % title for title in skipped_steps] + skips.recorded(os.environ[skips.LOG])
    os.remove(os.environ[skips.LOG])
    print("\n== scripts/test %s in %d min %02d s" % ("passed" if rc == 0 else "FAILED", minutes, seconds))
    print("   skipped: %d%s" % (len(left_out), "".join("\n     - " + s for s in left_out)), flush=True)
    return rc


if __name__ == "__main__":
    started = time.monotonic()
    # Where the steps list the parts they left out (skips.skipped); removed by summary().
    os.environ[skips.LOG] = tempfile.mkstemp(prefix="crebitos-test-skips.")[1]
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    sys.exit(summary(code, started))
