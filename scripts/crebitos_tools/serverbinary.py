"""The server binary the stack runs: the release build, and a whole copy of it."""
import os
import shutil
import subprocess
import sys
import time

from . import REPO
from .processes import die, log, write

def build_binary(no_build=False, log=log, build_log=None, postgres=True):
    """Where `swift build -c release` puts the server, after running it unless no_build.
    postgres=False builds it without the PostgreSQL store (the package trait off): no
    postgres-nio and no BoringSSL to compile, which is most of a first build's time."""
    if not shutil.which("swift"):
        die("the Swift toolchain is needed to build (or pass --bin PATH)")
    if not no_build:
        command = ["swift", "build", "-c", "release", "--product", "crebitos"] \
            + ([] if postgres else ["--disable-default-traits"])
        log("building: " + " ".join(command) + (" (log: %s)" % build_log if build_log else ""))
        r = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if build_log:
            write(build_log, r.stdout)
        if r.returncode != 0:
            print("\n".join(r.stdout.splitlines()[-40:]), file=sys.stderr)
            die("release build failed" + (" (full log: %s)" % build_log if build_log else ""))
    return os.path.join(subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=REPO,
                                       capture_output=True, text=True).stdout.strip(), "crebitos")

def copy_binary(src, dst):
    """Copies the server binary whole: the shared .build may be relinked by another build at
    any moment, and a half-written binary hangs or crashes."""
    for _ in range(40):
        try:
            before = os.stat(src)
            if time.time() - before.st_mtime > 2:
                shutil.copy2(src, dst)
                after = os.stat(src)
                if (before.st_size, before.st_mtime) == (after.st_size, after.st_mtime) \
                        and os.path.getsize(dst) == before.st_size \
                        and subprocess.run([dst, "--help"], capture_output=True, timeout=20).returncode == 0:
                    return
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(3)
    raise SystemExit("could not get a stable copy of %s (is a build rewriting it?)" % src)
