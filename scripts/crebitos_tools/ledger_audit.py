"""The ledger after a fault test, against every request the test sent and every answer it got.

Each transaction the workload sent has a unique `descricao`, so its row (if any) is found
exactly. The checks, each of which can fail:

  integrity     PRAGMA integrity_check answers "ok"
  clients, rows, balances, history    the invariants of ledger.py
  unknown       every row of the run was sent by the test, with the same client, tipo, valor
  once          no transaction is stored more than once
  acked         every transaction answered 200 is stored (exactly once)
  refused       no transaction answered 422 (or another 4xx) is stored
  keyed         every keyed client ended with a definitive answer (200 or 422; a final 409,
                "this key is being processed", is not one): retrying
                with the key after a 502/504/no answer reached an answer for every intent
  keys          idempotency_keys agrees with the rows: a key recorded as applied has its
                row, a key recorded as refused has none, every row of a keyed request has
                its key
  saldos        the balance each 200 returned (first answers and replays alike) is the
                balance right after its row in the replay
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


def audit(path, workload, since_id=0, no_late=False):
    checks = []
    numbers = {}

    def check(name, ok, msg):
        checks.append({"check": name, "ok": bool(ok), "message": msg})

    integ = integrity(path)
    check("integrity", integ == "ok", "PRAGMA integrity_check: %s" % integ[:300])
    snap = Snapshot(path)
    checks += snap.invariants()
    clientes, rows, keys, after_row = snap.clientes, snap.rows, snap.keys, snap.after_row

    # rows of this run, by descricao
    by_descr = defaultdict(list)
    for r in rows:
        if r[0] > since_id:
            by_descr[r[4]].append(r)
    intents = {it.descricao: it for it in workload.intents}
    unknown = [r for d, rs in by_descr.items() for r in rs if d not in intents]
    mismatched = [r for d, rs in by_descr.items() if d in intents for r in rs
                  if (r[1], r[2], r[3]) != (intents[d].client, intents[d].valor, intents[d].tipo)]
    check("unknown", not unknown and not mismatched,
          "every row was sent by the test, as sent" if not unknown and not mismatched
          else "%d rows nobody sent %s; %d rows differ from what was sent %s"
          % (len(unknown), unknown[:MAX_EXAMPLES], len(mismatched), mismatched[:MAX_EXAMPLES]))
    twice = [(d, len(rs)) for d, rs in by_descr.items() if len(rs) > 1]
    check("once", not twice, "no transaction stored twice" if not twice
          else "%d transactions stored more than once, e.g. %s" % (len(twice), twice[:MAX_EXAMPLES]))

    acked_missing, refused_stored, unresolved = [], [], []
    wrong_saldo, compared = [], 0
    key_problems = []
    late = []
    n = defaultdict(int)
    for it in workload.intents:
        stored = by_descr.get(it.descricao, [])
        hidden = late_commits(it, stored)
        if hidden:
            late.append((it.descricao, [a.status or a.error for a in it.attempts]))
        statuses = [a.status for a in it.attempts]
        kind = "keyed" if it.key else "plain"
        n[kind] += 1
        n["attempts"] += len(it.attempts)
        for a in it.attempts:
            if a.status == 200:
                if not stored:
                    acked_missing.append(it.descricao)
                elif len(stored) == 1:
                    compared += 1
                    if a.saldo != after_row[stored[0][0]]:
                        wrong_saldo.append((it.descricao, a.saldo, after_row[stored[0][0]]))
        unclear = [a for a in it.attempts if a.status not in (200, 422) and not (400 <= a.status < 500)]
        for a in unclear:
            label = str(a.status) if a.status else (a.error or "error")
            n["unclear " + label] += 1
        final = it.final_status
        if final == 409 and it.key:
            # 409: "a request with this Idempotency-Key is being processed; retry once it has
            # been answered": the client still does not know what happened.
            unresolved.append((it.descricao, statuses))
        elif final == 422 or (final and 400 <= final < 500):
            if stored:
                refused_stored.append((it.descricao, statuses))
            n[kind + " refused"] += 1
        elif final == 200:
            n[kind + " applied"] += 1
            if it.final.replayed:
                n["keyed replays"] += 1
                if any(a.status != 200 for a in it.attempts[:-1]):
                    n["keyed: the unclear answer had hidden a commit (found by the retry)"] += 1
                    first = it.attempts[0]
                    n["committed although the first answer was " + (str(first.status) if first.status else first.error)] += 1
        else:
            if it.key:
                unresolved.append((it.descricao, statuses))
            else:
                n["plain unclear"] += 1
                if stored:
                    n["plain unclear but committed"] += 1
                    last = it.final
                    n["committed although the first answer was " + (str(last.status) if last.status else last.error)] += 1
        if it.key and len(it.attempts) > 1:
            n["keyed retried"] += 1
        # keys table
        if it.key:
            rec = keys.get(it.key)
            if rec is None:
                if stored or final in DEFINITIVE_SET:
                    key_problems.append((it.key, "no key recorded", statuses, len(stored)))
            else:
                _, _, outcome, saldo = rec
                if outcome == "applied" and len(stored) != 1:
                    key_problems.append((it.key, "applied but %d rows" % len(stored)))
                if outcome != "applied" and stored:
                    key_problems.append((it.key, "%s but stored" % outcome))
                if outcome == "applied" and stored and saldo != after_row[stored[0][0]]:
                    key_problems.append((it.key, "recorded saldo %s != replay %s" % (saldo, after_row[stored[0][0]])))
    check("acked", not acked_missing, "every 200 is stored" if not acked_missing
          else "%d transactions answered 200 are missing, e.g. %s" % (len(acked_missing), acked_missing[:MAX_EXAMPLES]))
    check("refused", not refused_stored, "nothing answered 4xx is stored" if not refused_stored
          else "%d refused transactions are stored, e.g. %s" % (len(refused_stored), refused_stored[:MAX_EXAMPLES]))
    check("keyed", not unresolved, "every keyed client got a definitive answer (%d retried)" % n["keyed retried"]
          if not unresolved else "%d keyed transactions never got a definitive answer, e.g. %s"
          % (len(unresolved), unresolved[:MAX_EXAMPLES]))
    check("keys", not key_problems, "idempotency_keys agrees with the rows for all %d keyed transactions" % n["keyed"]
          if not key_problems else "%d problems, e.g. %s" % (len(key_problems), key_problems[:MAX_EXAMPLES]))
    check("saldos", not wrong_saldo, "%d returned balances equal the replayed ledger" % compared
          if not wrong_saldo else "%d differ, e.g. %s" % (len(wrong_saldo), wrong_saldo[:MAX_EXAMPLES]))
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
    n["rows this run"] = sum(len(v) for v in by_descr.values())
    n["rows total"] = len(rows)
    n["acked 200 missing (lost)"] = len(acked_missing)
    n["stored twice"] = len(twice)
    numbers.update(n)
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "numbers": dict(numbers),
            "clientes": {c: {"limite": l, "saldo": s} for c, (l, s) in clientes.items()}}


DEFINITIVE_SET = (200, 422)


def format_report(res, title="ledger audit"):
    return ledger.format_report(res["checks"], title)
