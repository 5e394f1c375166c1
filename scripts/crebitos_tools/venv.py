"""The tooling's virtual environment: .venv/ at the repository root, holding exactly the
versions scripts/requirements.txt pins. Nothing is pip-installed into the system Python
(Debian 12's refuses that anyway); Debian's python3 needs the python3-venv package to create
one, which is installed with apt-get when running as root.

    python3 scripts/crebitos_tools/venv.py     create or update it, print its bin directory
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(REPO, ".venv")
BIN = os.path.join(VENV, "bin")
REQUIREMENTS = os.path.join(REPO, "scripts", "requirements.txt")
STAMP = os.path.join(VENV, "installed-requirements.txt")


def _say(msg):
    print("venv: %s" % msg, file=sys.stderr, flush=True)


def _create():
    python = shutil.which("python3") or sys.executable
    if subprocess.run([python, "-m", "venv", "--clear", VENV], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("cannot create %s: install python3-venv (sudo apt-get install -y python3-venv)" % VENV)
    _say("installing python3-venv (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-qq", "python3-venv"], env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "python3-venv"], env=env, check=True, capture_output=True)
    subprocess.run([python, "-m", "venv", "--clear", VENV], check=True)


def ensure():
    """Make .venv match requirements.txt (a no-op when it already does); return its bin dir."""
    with open(REQUIREMENTS) as fh:
        wanted = fh.read()
    try:
        with open(STAMP) as fh:
            if fh.read() == wanted and os.path.exists(os.path.join(BIN, "python")):
                return BIN
    except FileNotFoundError:
        pass
    _say("installing the pinned tools into %s (scripts/requirements.txt; a minute or two, once)" % VENV)
    if not os.path.exists(os.path.join(BIN, "pip")):
        _create()
    subprocess.run([os.path.join(BIN, "pip"), "install", "-q", "--disable-pip-version-check",
                    "-r", REQUIREMENTS], check=True)
    with open(STAMP, "w") as fh:
        fh.write(wanted)
    return BIN


def reexec():
    """Run the calling script again under the environment's Python, unless it already is."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    ensure()
    python = os.path.join(BIN, "python")
    os.execv(python, [python] + sys.argv)


def tool(name):
    """The path of a command the environment installed (k6, schemathesis)."""
    return os.path.join(ensure(), name)


if __name__ == "__main__":
    print(ensure())
