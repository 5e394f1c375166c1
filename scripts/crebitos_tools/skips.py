"""What a test left out, counted: scripts/test lists every skip in its final summary. A whole
test that cannot run here exits SKIPPED (3) after saying why; a test that runs but leaves a
part out calls skipped(what, why), which prints it and, under scripts/test (which sets
$CREBITOS_SKIP_LOG), appends it to the suite's list."""
import os
import sys

SKIPPED = 3  # the exit status of a test that could not run here and said why
LOG = "CREBITOS_SKIP_LOG"


def skipped(what, why):
    print("  SKIP  %s: %s" % (what, why), flush=True)
    path = os.environ.get(LOG)
    if path:
        with open(path, "a") as fh:
            fh.write("%s: %s\n" % (what, why.replace("\n", " ")))


def recorded(path):
    """The skips appended to path so far."""
    try:
        with open(path) as fh:
            return [line.strip() for line in fh if line.strip()]
    except OSError:
        return []


if __name__ == "__main__":  # python3 -m crebitos_tools.skips WHAT WHY: for the shell scripts
    skipped(sys.argv[1], " ".join(sys.argv[2:]))
