"""The fault tests' `late` check (ledger_audit.late_commits): which requests answered 5xx or
not at all were nonetheless stored. Stdlib only, no server."""
import unittest

from crebitos_tools.ledger_audit import late_commits
from crebitos_tools.workload import Attempt, Intent


def intent(key, *answers):
    """answers: (status, replayed) per attempt; status 0 is "no answer"."""
    it = Intent(1, 1, "c", 10, "abcdefghij", key, 0.0)
    for status, replayed in answers:
        a = Attempt(0.0)
        a.status, a.replayed = status, replayed
        it.attempts.append(a)
    return it


STORED = [("row",)]


class LateCommitTest(unittest.TestCase):
    def test_plain_client_told_504_but_stored(self):
        self.assertEqual(len(late_commits(intent(None, (504, False)), STORED)), 1)

    def test_plain_client_without_answer_but_stored(self):
        self.assertEqual(len(late_commits(intent(None, (0, False)), STORED)), 1)

    def test_plain_client_told_503_and_nothing_stored(self):
        self.assertEqual(late_commits(intent(None, (503, False)), []), [])

    def test_plain_client_told_200(self):
        self.assertEqual(late_commits(intent(None, (200, False)), STORED), [])

    def test_keyed_retry_applied_it_after_a_503(self):
        # The 503 wrote nothing: the retry's 200 is a first answer, not a replay.
        self.assertEqual(late_commits(intent("k", (503, False), (200, False)), STORED), [])

    def test_keyed_retry_replays_what_the_504_committed(self):
        self.assertEqual(len(late_commits(intent("k", (504, False), (502, False), (200, True)), STORED)), 2)

    def test_keyed_client_that_never_got_an_answer_but_stored(self):
        self.assertEqual(len(late_commits(intent("k", (504, False), (0, False)), STORED)), 2)


if __name__ == "__main__":
    unittest.main()
