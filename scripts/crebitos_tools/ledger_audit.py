"""The ledger after a fault test, against every request the test sent and every answer it got.

Each transaction the workload sent (an intent: one request, and for a keyed client its
retries with the same Idempotency-Key) has a unique `descricao`, so its row (if any) is
found exactly. The checks, each of which can fail:

  integrity     PRAGMA integrity_check answers "ok"
  clients, rows, balances, history    the invariants of ledger.py
  count, acked, extra, saldos    the matching of ledger.compare, one transaction per intent
                (answered 200 by any attempt, refused by its final 4xx, else unclear): every
                200 stored once, nothing stored twice, refused or never sent, the balance
                each 200 returned (first answers and replays alike) is the balance right
                after its row in the replay
  keyed         every keyed client ended with a definitive answer (200 or 422; a final 409,
                "this key is being processed", is not one): retrying
                with the key after a 502/504/no answer reached an answer for every intent
  keys          idempotency_keys agrees with the rows: a key recorded as applied has its
                row, a key recorded as refused has none, every row of a keyed request has
                its key
  statements    no statement showed saldo.total < -limite
  late          (with no_late=True: runs without crashes, e.g. a frozen instance) no request
                answered 5xx or left without an answer was stored: a 5xx then means "not
                written", as a client that cannot retry must be able to rely on

And the numbers: how many answers did not tell the client what happened (502, 504, no
answer), and of those how many had in fact committed.
"""
from collections import defaultdict

from . import ledger
from .ledger import MAX_EXAMPLES, Snapshot, integrity  # noqa: F401 (integrity: for the tests)
from .workload import DEFINITIVE


def is_unclear(attempt):
    return not attempt.status or attempt.status >= 500


def late_commits(intent, stored):
    """The attempts of `intent` answered 5xx or not at all that nonetheless committed: a plain
    client's only attempt when its row is there, or a keyed client's unclear attempt that a
    later replay (Idempotent-Replayed: true) shows to have committed."""
    unclear = [a for a in intent.attempts if is_unclear(a)]
    if not unclear or not stored:
        return []
    final = intent.final
    if intent.key and final.status == 200 and not final.replayed:
        return []  # the unclear attempts wrote nothing; the last one applied it
    return unclear


def outcome(it):
    """What the intent's answers told its client: ledger.ACKED, REFUSED or UNCLEAR. A keyed
    client's final 409 ("this key is being processed") tells nothing yet."""
    final = it.final_status or 0
    if any(a.status == 200 for a in it.attempts):
        return ledger.ACKED
    if 400 <= final < 500 and not (final == 409 and it.key):
        return ledger.REFUSED
    return ledger.UNCLEAR


def request(it):
    return (it.client, it.tipo, it.valor, it.descricao)


def label(attempt):
    return str(attempt.status) if attempt.status else (attempt.error or "error")


def audit(path, workload, since_id=0, no_late=False):
    checks = []

    def check(name, ok, msg):
        checks.append({"check": name, "ok": bool(ok), "message": msg})

    integ = integrity(path)
    check("integrity", integ == "ok", "PRAGMA integrity_check: %s" % integ[:300])
    snap = Snapshot(path)
    checks += snap.invariants()
    sent = [(request(it), outcome(it), [a.saldo for a in it.attempts if a.status == 200]) for it in workload.intents]
    matched, m = ledger.compare(snap, sent, since_id)
    # Rows of unclear requests are this audit's `late` check and numbers, not a finding.
    checks += [c for c in matched if c["check"] != "unanswered"]

    unresolved, key_problems, late = [], [], []
    n = defaultdict(int)
    for it, (_, told, _) in zip(workload.intents, sent):
        stored = m["stored"].get(request(it), [])
        if late_commits(it, stored):
            late.append((it.descricao, [a.status or a.error for a in it.attempts]))
        statuses = [a.status for a in it.attempts]
        kind = "keyed" if it.key else "plain"
        n[kind] += 1
        n["attempts"] += len(it.attempts)
        for a in it.attempts:
            if is_unclear(a):
                n["unclear " + label(a)] += 1
        if told == ledger.REFUSED:
            n[kind + " refused"] += 1
        elif told == ledger.ACKED:
            n[kind + " applied"] += 1
            if it.final.replayed:
                n["keyed replays"] += 1
                if any(a.status != 200 for a in it.attempts[:-1]):
                    n["keyed: the unclear answer had hidden a commit (found by the retry)"] += 1
                    n["committed although the first answer was " + label(it.attempts[0])] += 1
        elif it.key:
            unresolved.append((it.descricao, statuses))
        else:
            n["plain unclear"] += 1
            if stored:
                n["plain unclear but committed"] += 1
                n["committed although the first answer was " + label(it.final)] += 1
        if it.key and len(it.attempts) > 1:
            n["keyed retried"] += 1
        if it.key:
            rec = snap.keys.get(it.key)
            if rec is None:
                if stored or it.final_status in DEFINITIVE:
                    key_problems.append((it.key, "no key recorded", statuses, len(stored)))
            else:
                _, _, recorded, saldo = rec
                if recorded == "applied" and len(stored) != 1:
                    key_problems.append((it.key, "applied but %d rows" % len(stored)))
                if recorded != "applied" and stored:
                    key_problems.append((it.key, "%s but stored" % recorded))
                if recorded == "applied" and stored and saldo != snap.after_row[stored[0]]:
                    key_problems.append((it.key, "recorded saldo %s != replay %s" % (saldo, snap.after_row[stored[0]])))
    check("keyed", not unresolved, "every keyed client got a definitive answer (%d retried)" % n["keyed retried"]
          if not unresolved else "%d keyed transactions never got a definitive answer, e.g. %s"
          % (len(unresolved), unresolved[:MAX_EXAMPLES]))
    check("keys", not key_problems, "idempotency_keys agrees with the rows for all %d keyed transactions" % n["keyed"]
          if not key_problems else "%d problems, e.g. %s" % (len(key_problems), key_problems[:MAX_EXAMPLES]))
    bad_st = [(s.client, s.total, s.limite) for s in workload.statements
              if s.status == 200 and (s.total is None or s.limite is None or s.total < -s.limite)]
    check("statements", not bad_st, "%d statements, none below -limite" % sum(1 for s in workload.statements if s.status == 200)
          if not bad_st else "%d statements below -limite: %s" % (len(bad_st), bad_st[:MAX_EXAMPLES]))
    if no_late:
        check("late", not late, "no request answered 5xx or left unanswered was stored (%d such answers)"
              % sum(n[k] for k in n if k.startswith("unclear ")) if not late
              else "%d transactions answered 5xx or not at all were stored (late commits), e.g. %s"
              % (len(late), late[:MAX_EXAMPLES]))
    n["late commits (5xx or no answer, stored)"] = len(late)
    n["rows this run"] = m["rows"]
    n["rows total"] = len(snap.rows)
    n["acked 200 missing (lost)"] = m["missing"]
    n["stored twice"] = m["twice"]
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "numbers": dict(n),
            "clientes": {c: {"limite": l, "saldo": s} for c, (l, s) in snap.clientes.items()}}
