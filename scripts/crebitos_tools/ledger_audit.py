"""The ledger after a fault test, against every request the workload sent and every answer it
got (each intent: one request, for a keyed client with its retries under the same key; its
unique `descricao` finds its row). Checks, each able to fail: integrity; the invariants and
the matching of ledger.py (one transaction per intent: answered 200 by any attempt, refused
by its final 4xx, else unclear); keyed (every keyed client ended on 200 or 422: its retries
stop at a definitive answer, so a final 5xx or no answer means it gave up unresolved); keys
(idempotency_keys agrees with the rows); statements (none showed saldo.total < -limite); and
with no_late, late (no request answered 5xx or not at all was stored). docs/FAULTS.md says why
each matters."""
from collections import defaultdict

from . import ledger
from .ledger import MAX_EXAMPLES, Snapshot, finding, integrity
from .workload import DEFINITIVE

HIDDEN = "keyed: the unclear answer had hidden a commit (found by the retry)"


def is_unclear(attempt):
    return not attempt.status or attempt.status >= 500


def late_commits(intent, stored):
    """The attempts of `intent` answered 5xx or not at all that nonetheless committed: a plain
    client's only attempt when its row is there, or a keyed client's unclear attempts when a
    later replay (Idempotent-Replayed: true) shows one of them committed."""
    unclear = [a for a in intent.attempts if is_unclear(a)]
    if not unclear or not stored or (intent.key and intent.final.status == 200 and not intent.final.replayed):
        return []  # nothing unclear, nothing stored, or the last attempt applied it itself
    return unclear


def outcome(it):
    """What the intent's answers told its client: ledger.ACKED, REFUSED or UNCLEAR."""
    final = it.final_status or 0
    if any(a.status == 200 for a in it.attempts):
        return ledger.ACKED
    if 400 <= final < 500:
        return ledger.REFUSED
    return ledger.UNCLEAR


def request(it):
    return (it.client, it.tipo, it.valor, it.descricao)


def label(attempt):
    return str(attempt.status) if attempt.status else (attempt.error or "error")


def key_problems(it, rec, stored, statuses, after_row):
    """What is wrong between a keyed intent, its idempotency_keys record and its rows."""
    if rec is None:
        return [(it.key, "no key recorded", statuses, len(stored))] if stored or it.final_status in DEFINITIVE else []
    recorded, saldo = rec[1], rec[2]
    out = []
    if recorded == "applied" and len(stored) != 1:
        out.append((it.key, "applied but %d rows" % len(stored)))
    if recorded != "applied" and stored:
        out.append((it.key, "%s but stored" % recorded))
    if recorded == "applied" and stored and saldo != after_row[stored[0]]:
        out.append((it.key, "recorded saldo %s != replay %s" % (saldo, after_row[stored[0]])))
    return out


def audit(path, workload, since_id=0, no_late=False, late_batches=0):
    """no_late: no request answered 5xx or not at all may have been stored, except that the
    late commits may come from at most `late_batches` batches: a batch is the rows one commit
    stored, which share their realizada_em (a process stamps each batch with its own, strictly
    increasing time). A freeze of the instance while it was inside COMMIT, longer than nginx's
    timeout, lets that one batch land after nginx answered 504: nothing can stop a commit the
    disk has already begun."""
    integ = integrity(path)
    checks = [finding("integrity", integ == "ok", "%s: %s" % (ledger.integrity_check_name(path), integ[:300]))]
    snap = Snapshot(path)
    checks += snap.invariants()
    sent = [(request(it), outcome(it), [a.saldo for a in it.attempts if a.status == 200]) for it in workload.intents]
    matched, m = ledger.compare(snap, sent, since_id)
    # Rows of unclear requests are this audit's `late` check and numbers, not a finding.
    checks += [c for c in matched if c["check"] != "unanswered"]
    unresolved, problems, late = [], [], []
    n = defaultdict(int)
    for it, (_, told, _) in zip(workload.intents, sent):
        stored = m["stored"].get(request(it), [])
        statuses = [a.status for a in it.attempts]
        if late_commits(it, stored):
            late.append((it.descricao, [a.status or a.error for a in it.attempts], stored))
        kind = "keyed" if it.key else "plain"
        n[kind] += 1
        n["attempts"] += len(it.attempts)
        for a in filter(is_unclear, it.attempts):
            n["unclear " + label(a)] += 1
        if told == ledger.REFUSED:
            n[kind + " refused"] += 1
        elif told == ledger.ACKED:
            n[kind + " applied"] += 1
            if it.final.replayed:
                n["keyed replays"] += 1
                if any(a.status != 200 for a in it.attempts[:-1]):
                    n[HIDDEN] += 1
                    n["committed although the first answer was " + label(it.attempts[0])] += 1
        elif it.key:
            unresolved.append((it.descricao, statuses))
        else:
            n["plain unclear"] += 1
            if stored:
                n["plain unclear but committed"] += 1
                n["committed although the first answer was " + label(it.final)] += 1
        if it.key:
            n["keyed retried"] += len(it.attempts) > 1
            problems += key_problems(it, snap.keys.get((it.client, it.key)), stored, statuses, snap.after_row)
    checks.append(finding("keyed", not unresolved, "every keyed client got a definitive answer (%d retried)"
                          % n["keyed retried"] if not unresolved else "%d keyed transactions never got a definitive "
                          "answer, e.g. %s" % (len(unresolved), unresolved[:MAX_EXAMPLES])))
    checks.append(finding("keys", not problems, "idempotency_keys agrees with the rows for all %d keyed transactions"
                          % n["keyed"] if not problems else "%d problems, e.g. %s" % (len(problems), problems[:MAX_EXAMPLES])))
    answered = [s for s in workload.statements if s.status == 200]
    bad_st = [(s.client, s.total, s.limite) for s in answered if s.total is None or s.limite is None or s.total < -s.limite]
    checks.append(finding("statements", not bad_st, "%d statements, none below -limite" % len(answered)
                          if not bad_st else "%d statements below -limite: %s" % (len(bad_st), bad_st[:MAX_EXAMPLES])))
    performed_at = {row[0]: row[5] for row in snap.rows}
    batches = sorted({performed_at.get(rid) for _, _, rows in late for rid in rows})
    if no_late:
        unclear = sum(v for k, v in n.items() if k.startswith("unclear "))
        examples = [(descricao, answers) for descricao, answers, _ in late[:MAX_EXAMPLES]]
        checks.append(finding("late", len(batches) <= late_batches,
                              "no request answered 5xx or left unanswered was stored (%d such answers)" % unclear if not late
                              else "%d requests answered 5xx or not at all were stored, all from %d batch(es) (at most %d "
                              "allowed: the commit in flight at each freeze), e.g. %s" % (len(late), len(batches), late_batches,
                                                                                           examples)
                              if len(batches) <= late_batches
                              else "%d transactions answered 5xx or not at all were stored (late commits) in %d batches, "
                              "more than the %d allowed, e.g. %s" % (len(late), len(batches), late_batches, examples)))
    n.update({"late commits (5xx or no answer, stored)": len(late), "late batches": len(batches),
              "rows this run": m["rows"], "rows total": len(snap.rows),
              "acked 200 missing (lost)": m["missing"], "stored twice": m["twice"]})
    return {"checks": checks, "numbers": dict(n)}
