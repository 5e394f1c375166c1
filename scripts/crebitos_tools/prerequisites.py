"""What the tools install from Debian when a program they need is missing (as root; otherwise
they say what to install)."""
import os
import shutil
import subprocess

from .processes import die, log, write

def apt_install(pkg):
    """Install pkg from Debian (as root). policy-rc.d answering 101 keeps the package's own service
    from starting (a system nginx on port 80, a cluster on 5432); the package lists are refreshed
    only if installing fails."""
    policy = "/usr/sbin/policy-rc.d"
    created = not os.path.exists(policy)
    if created:
        write(policy, "#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                die("apt-get install %s failed" % pkg)
    finally:
        if created:
            os.remove(policy)

def need(pkg, found, what, out=None):
    """found()'s answer; if none, install pkg as root, else say what to install."""
    if not found():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            die("%s is missing: install it with: sudo apt-get install -y %s" % (what, pkg))
        log("installing %s (for %s)" % (pkg, what), out)
        apt_install(pkg)
    return found() or die("installed %s but %s is still missing" % (pkg, what))
