"""The hostile corpus: requests that must all be refused, each with the answer it must get.

A case is (category, name, raw request bytes, expectation, options for httpc.exchange). The
expectations: app(status[, field]): the API answers with its JSON error body {"error": ...,
"field"?: ...} (x-instance set), `field` when given being its "field"; nginx(status): nginx
refuses it before any instance sees it; none(): no answer is right (the client stopped
sending); any4xx(): some 4xx from either; app_or_get(): a GET that may also answer 200.

Nothing in here may write: bodies that get past validation carry a debit no client can
afford (the store refuses it), and Idempotency-Keys only go with bodies refused before the
store. Tables are one case a line: (name, request or body[, expectation or field]).
"""
import functools

from . import httpc

J = {"Content-Type": "application/json"}
BIG_DEBIT = 9007199254740991  # the largest valid valor: as a debit, over every client's limit
VALID = '{"valor": 1000, "tipo": "d", "descricao": "descricao"}'
INVAL = '{"valor": 0, "tipo": "c", "descricao": "a"}'  # refused whatever the media type
TX = "/clientes/1/transacoes"
# The start of a hand-written POST of a transaction, up to its JSON Content-Type header.
JSON_POST = "POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


class Expect:
    def __init__(self, kind, status=None, field=None):
        self.kind, self.status, self.field = kind, status, field

    def describe(self):
        return {"app": "API %s%s" % (self.status, " field=%s" % self.field if self.field else ""),
                "nginx": "nginx %s" % self.status, "none": "no answer", "any4xx": "any 4xx"}[self.kind]


app, nginx, none, any4xx, app_or_get = (functools.partial(Expect, kind) for kind in ("app", "nginx", "none", "any4xx", "get-ok"))


def post(path, body, headers=None):
    return httpc.build("POST", path, body, dict(J, **(headers or {})))


def tx(body, headers=None):  # a POST of a transaction
    return post(TX, body, headers)


def raw(text):
    return text.encode("latin-1") if isinstance(text, str) else text


def hand(line, head=""):
    """A hand-written request without a body: `line`, Host: x, the header lines `head`, Connection: close."""
    return raw("%s\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (line, head))


def json_post(head, body=""):
    """JSON_POST, the header lines `head`, Connection: close, then `body` as it is (chunked or not)."""
    return raw(JSON_POST + head + "Connection: close\r\n\r\n" + body)


def member(name, value):
    """A transaction body with `value` (raw JSON) as the member `name`, the others valid."""
    fields = {"valor": "1", "tipo": '"c"', "descricao": '"a"'}
    fields[name] = value
    return "{%s}" % ", ".join('"%s": %s' % kv for kv in fields.items())


def debit(descricao):
    """A valid body (this descricao) on a debit no client can afford: reaches the store, writes nothing."""
    return '{"valor": %d, "tipo": "d", "descricao": "%s"}' % (BIG_DEBIT, descricao)


def cases():
    out = []

    def add(cat, name, data, exp, **opts):
        out.append((cat, name, data, exp, opts))

    def table(cat, rows, exp=None, make=tx):
        """A case per row (name, payload[, expectation or field]): the request make(payload),
        the row's expectation, else exp, else the API's 422 on the row's field."""
        for name, payload, *rest in rows:
            add(cat, name, make(payload), rest[0] if rest and isinstance(rest[0], Expect) else exp or app(422, *rest))

    table("truncated JSON", [("first %d bytes of a valid body" % i, VALID[:i]) for i in range(len(VALID))], app(400))
    table("malformed JSON", [
        ("trailing comma", '{"valor": 1, "tipo": "d", "descricao": "a",}'),
        ("missing comma", '{"valor": 1 "tipo": "d", "descricao": "a"}'),
        ("single quotes", "{'valor': 1, 'tipo': 'd', 'descricao': 'a'}"),
        ("unquoted keys", '{valor: 1, tipo: "d", descricao: "a"}'),
        ("leading zero", '{"valor": 01, "tipo": "d", "descricao": "a"}'),
        ("plus sign", '{"valor": +1, "tipo": "d", "descricao": "a"}'),
        ("hex number", '{"valor": 0x10, "tipo": "d", "descricao": "a"}'),
        ("bare dot", '{"valor": .5, "tipo": "d", "descricao": "a"}'),
        ("trailing dot", '{"valor": 1., "tipo": "d", "descricao": "a"}'),
        ("exponent without digits", '{"valor": 1e, "tipo": "d", "descricao": "a"}'),
        ("garbage after the object", VALID + "x"), ("two objects", VALID + VALID),
        ("comment", '{"valor": 1, /* c */ "tipo": "d", "descricao": "a"}'),
        ("line comment", '{"valor": 1, // c\n "tipo": "d", "descricao": "a"}'),
        ("unterminated string", '{"valor": 1, "tipo": "d", "descricao": "abc}'),
        ("bad escape", '{"valor": 1, "tipo": "d", "descricao": "\\x41"}'),
        ("short unicode escape", '{"valor": 1, "tipo": "d", "descricao": "\\u12"}'),
        ("raw newline in a string", '{"valor": 1, "tipo": "d", "descricao": "a\nb"}'),
        ("raw tab in a string", '{"valor": 1, "tipo": "d", "descricao": "a\tb"}'),
        ("capitalised literal", '{"valor": 1, "tipo": "d", "descricao": Null}'),
        ("undefined", '{"valor": undefined, "tipo": "d", "descricao": "a"}'),
        ("only whitespace", " \r\n\t "), ("only a colon", ":"),
        ("unbalanced brackets", '{"valor": [1}, "tipo": "d", "descricao": "a"}'),
        ("NUL byte between members", '{"valor": 1,\x00 "tipo": "d", "descricao": "a"}'),
        ("byte order mark", "\ufeff" + VALID), ("empty body (Content-Length: 0)", "")], app(400))
    add("malformed JSON", "no body at all", httpc.build("POST", TX, None, J), app(400))
    table("not an object", [("null", "null"), ("array", "[]"), ("array of the object", "[" + VALID + "]"),
                            ("string", '"valor"'), ("number", "1000"), ("true", "true")], app(422))
    table("bad encoding", [
        ("invalid UTF-8 byte", b'{"valor": 1, "tipo": "d", "descricao": "\xff"}'),
        ("overlong UTF-8 '/'", b'{"valor": 1, "tipo": "d", "descricao": "\xc0\xaf"}'),
        ("UTF-8 encoded surrogate", b'{"valor": 1, "tipo": "d", "descricao": "\xed\xa0\x80"}'),
        ("truncated UTF-8 sequence", b'{"valor": 1, "tipo": "d", "descricao": "\xe2\x82"}'),
        ("lone high surrogate escape", '{"valor": 1, "tipo": "d", "descricao": "\\ud800"}'),
        ("lone low surrogate escape", '{"valor": 1, "tipo": "d", "descricao": "\\udc00x"}'),
        ("UTF-16 body", VALID.encode("utf-16")), ("UTF-32 body", VALID.encode("utf-32"))], app(400))
    table("invalid fields", [
        ("empty object", "{}", "valor"), ("valor missing", '{"tipo": "d", "descricao": "a"}', "valor"),
        ("tipo missing", '{"valor": 1, "descricao": "a"}', "tipo"),
        ("descricao missing", '{"valor": 1, "tipo": "d"}', "descricao"),
        ("keys in another case", '{"Valor": 1, "Tipo": "d", "Descricao": "a"}', "valor"),
        ("keys with spaces", '{" valor": 1, "tipo ": "d", "descricao": "a"}', "valor")]
        + [("tipo " + name, '{"valor": 1, "tipo": %s, "descricao": "a"}' % value, "tipo") for name, value in [
            ("x", '"x"'), ("C", '"C"'), ("credit", '"credit"'), ("empty", '""'), ("with a space", '"d "'),
            ("d plus NUL", '"d\\u0000"'), ("as a number", "100"), ("as an array", '["d"]'), ("null", "null")]]
        + [("descricao " + name, '{"valor": 1, "tipo": "d", "descricao": %s}' % value, "descricao") for name, value in [
            ("null", "null"), ("empty", '""'), ("11 characters", '"12345678901"'),
            ("25 characters", '"1234567890123456789012345"'), ("3000 characters", '"%s"' % ("a" * 3000)),
            ("a number", "12"), ("an object", '{"a": 1}'), ("true", "true")]])

    # -- numbers at and past the limits ------------------------------------------------------
    table("numbers", [("valor " + name, member("valor", num), "valor") for name, num in [
        ("zero", "0"), ("minus zero", "-0"), ("negative", "-1"), ("int64 min", "-9223372036854775808"),
        ("2^53 (one past the largest valor)", "9007199254740992"),
        ("int64 max", "9223372036854775807"), ("int64 max + 1", "9223372036854775808"),
        ("uint64 max", "18446744073709551615"), ("uint64 max + 1", "18446744073709551616"),
        ("40 digits", "9" * 40), ("3000 digits", "9" * 3000),
        ("decimal 1.2", "1.2"), ("decimal 1.0", "1.0"), ("exponent 1e2", "1e2"), ("exponent 1E+2", "1E+2"),
        ("0.1e1", "0.1e1"), ("1e400 (overflows a double)", "1e400"), ("1e-400 (underflows)", "1e-400"),
        ("tiny decimal", "0.0000000000000000000001"), ("2^53 as a double", "9007199254740992.0"),
        ("string 1000", '"1000"'), ("string NaN", '"NaN"'), ("true", "true"), ("array", "[1000]"),
        ("object", '{"v": 1000}'), ("null", "null")]])
    table("NaN and Infinity", [("valor " + name, member("valor", num)) for name, num in [
        ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("nan", "nan"), ("inf", "inf"),
        ("double minus", "--1"), ("0x1", "0x1"), ("1_000", "1_000"), ("1,000 (unquoted)", "1,000")]], app(400))
    # The largest valid valor as a debit: valid, and refused by the ledger (no client can afford it).
    add("numbers", "valor 2^53-1 as a debit: valid, over the limit", tx(debit("limit")), app(422, "valor"))

    # -- duplicated keys, deep nesting -----------------------------------------------------------
    table("duplicated keys", [
        ("valor twice", '{"valor": 1, "valor": 2, "tipo": "c", "descricao": "a"}', "valor"),
        ("valor twice, same value", '{"valor": 1, "valor": 1, "tipo": "c", "descricao": "a"}', "valor"),
        ("tipo twice", '{"valor": 1, "tipo": "c", "tipo": "d", "descricao": "a"}', "tipo"),
        ("descricao twice", '{"valor": 1, "tipo": "c", "descricao": "a", "descricao": "b"}', "descricao"),
        ("valor twice, one escaped", '{"valor": 1, "val\\u006fr": 2, "tipo": "c", "descricao": "a"}', "valor"),
        ("valor twice, second null", '{"valor": 1, "tipo": "c", "descricao": "a", "valor": null}', "valor")])
    for depth in (33, 100, 1000, 2000):
        table("deep nesting", [
            ("array nested %d deep" % depth, "[" * depth + "]" * depth),
            ("object nested %d deep in an extra member" % depth,
             '{"x": ' + '{"a": ' * depth + "1" + "}" * depth + ', "valor": 1, "tipo": "c", "descricao": "a"}'
             if depth * 7 < 4000 else '{"x": ' + "[" * depth + "]" * depth + "}")], app(400))
    table("deep nesting", [
        ("2000 opening brackets, never closed", "[" * 2000, app(400)),
        ("valor nested 40 deep", '{"valor": ' + "[" * 40 + "1" + "]" * 40 + ', "tipo": "c", "descricao": "a"}', app(400)),
        ("nested 32 deep in an extra member (allowed), invalid tipo",
         '{"x": ' + "[" * 31 + "]" * 31 + ', "valor": 1, "tipo": "x", "descricao": "a"}', "tipo")])

    # -- huge bodies ------------------------------------------------------------------------------
    chunked, kib = "Transfer-Encoding: chunked\r\n", "400\r\n" + "a" * 1024 + "\r\n"
    table("huge bodies", [
        ("4097 bytes (past the API's 4 KiB)", tx('{"x": "%s"}' % ("a" * 4088)), app(413)),
        ("exactly 4096 bytes of an invalid body",
         tx('{"x": "%s", "valor": 0, "tipo": "c", "descricao": "a"}' % ("a" * (4096 - 52))), app(422, "valor")),
        ("16 KiB + 1 (past nginx's client_max_body_size)", tx("a" * (16 * 1024 + 1)), nginx(413)),
        ("1 MiB", tx("[" * (1 << 20)), nginx(413)),
        ("Content-Length 10^12, no body sent", json_post("Content-Length: 1000000000000\r\n"), nginx(413)),
        ("Content-Length past 2^63", json_post("Content-Length: 99999999999999999999\r\n"), nginx(400)),
        ("negative Content-Length", hand("POST %s HTTP/1.1" % TX, "Content-Length: -1\r\n"), nginx(400)),
        ("chunked, 5 KiB in 1 KiB chunks", json_post(chunked, kib * 5 + "0\r\n\r\n"), app(413)),
        ("chunked, 40 KiB", json_post(chunked, kib * 40 + "0\r\n\r\n"), nginx(413)),
        ("chunked, an invalid body", json_post(chunked, "5\r\n{\"val\r\n0\r\n\r\n"), app(400)),
        ("chunked, bad chunk size", json_post(chunked, "zz\r\nabc\r\n0\r\n\r\n"), nginx(400)),
        ("Content-Length and Transfer-Encoding both", json_post(chunked + "Content-Length: 5\r\n", "0\r\n\r\n"), nginx(400)),
        ("two different Content-Lengths", json_post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}x"), nginx(400)),
        # RFC 9112 6.1: a transfer coding the server does not know gets 501. nginx says so itself:
        # the only 5xx in this corpus, from nginx by the HTTP standard, never from an instance.
        ("Transfer-Encoding: gzip (unknown coding: nginx answers 501 by RFC 9112)",
         hand("POST %s HTTP/1.1" % TX, "Transfer-Encoding: gzip\r\n"), nginx(501))], make=raw)

    # -- content types -----------------------------------------------------------------------------
    def typed(ct, body=VALID):
        return httpc.build("POST", TX, body, {"Content-Type": ct})
    table("content types", [("Content-Type: %r" % ct, typed(ct)) for ct in [
        "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
        "application/json-patch+json", "application/jsonx", "text/json", "application/javascript", "json", "*/*",
        "application/*", "", "application/json,text/plain"]] + [
        ("form-encoded body", typed("application/x-www-form-urlencoded", "valor=1000&tipo=d&descricao=descricao")),
        ("two Content-Type headers, one not JSON", tx(VALID, {"content-type": "text/plain"}))], app(415), raw)
    # Accepted media types: the (invalid) payload decides.
    table("content types", [("Content-Type %r accepted, payload refused" % ct, typed(ct, INVAL)) for ct in [
        "APPLICATION/JSON", "application/json; charset=utf-8", "application/json;charset=UTF-8", " application/json ",
        "application/json; charset=latin-1"]] + [
        ("no Content-Type (accepted), payload refused", httpc.build("POST", TX, INVAL))], app(422, "valor"), raw)

    # -- unicode and control characters in descricao ------------------------------------------------
    table("control characters", [("descricao with " + name, member("descricao", '"%s"' % s), "descricao") for name, s in [
        ("NUL", "\\u0000"), ("NUL inside", "ab\\u0000cd"), ("newline", "a\\nb"), ("carriage return", "a\\r"),
        ("tab", "\\t"), ("escape (ANSI)", "\\u001b[31m"), ("unit separator", "\\u001f"), ("DEL", "\\u007f"),
        ("C1 control NEL", "\\u0085"), ("C1 control CSI", "\\u009b"), ("backspace", "\\b\\b\\b"), ("form feed", "\\f")]])
    table("unicode", [("descricao " + name, member("descricao", '"%s"' % s), "descricao") for name, s in [
        ("11 emoji (4-byte UTF-8 each)", "😀" * 11), ("6 letters with combining accents (12 code points)", "e\u0301" * 6),
        ("11 CJK characters", "漢" * 11), ("11 escaped emoji as surrogate pairs", "\\ud83d\\ude00" * 11),
        ("zero-width spaces only, 11", "\u200b" * 11)]])
    # Valid descriptions full of unusual characters: they reach the store (bound as SQL
    # parameters) on a debit no one can afford, and the store refuses it: nothing written.
    table("unicode", [("descricao %s (valid; debit refused by the ledger)" % name, debit(s), "valor") for name, s in [
        ("10 emoji", "😀" * 10), ("right-to-left override", "\u202eabc"), ("zero-width joiner", "a\u200db"),
        ("BOM character", "\ufeffx"), ("U+FFFF noncharacter", "\uffff"), ("combining only", "\u0301\u0301"),
        ("escaped emoji pair", "\\ud83d\\ude00"), ("all escapes", "\\\"\\\\\\/"), ("CJK", "漢字仮名交じり文"),
        ("percent and braces", "%s%n{0}")]])

    # -- SQL in every field -----------------------------------------------------------------------------
    table("SQL", [("descricao %s (valid; debit refused by the ledger)" % s, debit(s), "valor")
                  for s in ["' OR 1=1--", "';DROP--", "\\\" OR \\\"\\\"=\\\"", "1);--", "x'||'y"]]
          + [("descricao %r (too long)" % s, member("descricao", '"%s"' % s), "descricao")
             for s in ["'; DROP TABLE transacoes; --", "1' UNION SELECT * FROM clientes --"]] + [
        ("valor as SQL", '{"valor": "1; DROP TABLE clientes", "tipo": "c", "descricao": "a"}', "valor"),
        ("valor as bare SQL", '{"valor": 1; DROP TABLE clientes, "tipo": "c", "descricao": "a"}', app(400)),
        ("tipo as SQL", '{"valor": 1, "tipo": "c\' OR \'1\'=\'1", "descricao": "a"}', "tipo"),
        ("SQL as a member name", '{"valor\'; DROP TABLE clientes; --": 1, "tipo": "c", "descricao": "a"}', "valor")])
    table("SQL", [("id %s" % path, path) for path in [
        "/clientes/1;DROP%20TABLE%20clientes/transacoes", "/clientes/1%20OR%201=1/transacoes",
        "/clientes/1'--/transacoes", "/clientes/(SELECT%201)/transacoes", "/clientes/1%27/transacoes"]],
        app(404), lambda path: post(path, VALID))
    table("SQL", [
        ("SQL in the Idempotency-Key (with spaces: not a key)",
         tx(INVAL, {"Idempotency-Key": "'); DROP TABLE idempotency_keys; --"}), app(422, "valor")),
        ("SQL in the Idempotency-Key, valid body",
         tx(VALID, {"Idempotency-Key": "x' OR 1=1; DROP TABLE idempotency_keys; --"}), app(400, "Idempotency-Key")),
        ("SQL in the query string", httpc.build("GET", "/clientes/1/extrato?id=1%27%20OR%201=1--"), app_or_get())], make=raw)

    # -- idempotency key syntax ----------------------------------------------------------------------------
    table("Idempotency-Key", [(name, tx(VALID, {"Idempotency-Key": key})) for name, key in [
        ("129 characters", "k" * 129), ("a space inside", "a b"), ("non-ASCII", "ch\xe9"), ("a tab inside", "a\tb")]] + [
        ("empty (nginx drops empty headers? the API must not write)",
         tx(VALID.replace("1000", "%d" % BIG_DEBIT), {"Idempotency-Key": ""}), any4xx()),
        ("sent twice", json_post("Idempotency-Key: a\r\nIdempotency-Key: b\r\nContent-Length: %d\r\n" % len(VALID), VALID))],
        app(400, "Idempotency-Key"), raw)

    # -- ids and paths -----------------------------------------------------------------------------------------
    for id_ in ["0", "6", "-1", "+1", "1.0", "1e0", "0x1", "abc", "%31", "%20" + "1", "1%20", "9223372036854775807",
                "9223372036854775808", "99999999999999999999999", "1" * 200, "%EF%BC%91", "null", "undefined",
                "1,2", "*", "%2e%2e", "..%2f1", "1%2Fextrato", "1%00"]:
        add("ids and paths", "GET /clientes/%s/extrato" % id_, httpc.build("GET", "/clientes/%s/extrato" % id_),
            nginx(400) if id_ == "1%00" else app(404))
        if id_ != "1%00":
            add("ids and paths", "POST /clientes/%s/transacoes" % id_, post("/clientes/%s/transacoes" % id_, VALID), app(404))
    table("ids and paths", [("GET %s" % (path if len(path) < 60 else path[:40] + "... (%d bytes)" % len(path)), path, exp)
                            for path, exp in [
        ("/", app(404)), ("/clientes", app(404)), ("/clientes/", app(404)), ("/clientes/1", app(404)),
        ("/clientes/1/", app(404)), ("/clientes/1/transacao", app(404)), ("/CLIENTES/1/EXTRATO", app(404)),
        ("/clientes/1/./extrato", app(404)), ("/clientes/2/../1/extratox", app(404)),
        ("/../../etc/passwd", nginx(400)), ("/clientes/1/extrato/../../../../../etc/passwd", nginx(400)),
        ("/%2e%2e/%2e%2e/etc/passwd", nginx(400)), ("/admin", app(404)), ("/.env", app(404)),
        ("/clientes/1/extrato.json", app(404)), ("/clientes/%0a1/extrato", app(404)),
        ("/clientes/1/extrato%00.json", nginx(400)), ("/" + "a/" * 2000, app(404)), ("/" + "a" * 9000, nginx(414))]],
        make=lambda path: httpc.build("GET", path))
    table("ids and paths", [
        # nginx passes the raw bytes on; the instance refuses the URL with its own JSON 400.
        ("raw fullwidth digit in the id", hand("GET /clientes/\xef\xbc\x91/extrato HTTP/1.1"), app(400)),
        ("a space in the path", hand("GET /clientes/1 /extrato HTTP/1.1"), nginx(400)),
        ("absolute URI in the request line", hand("GET http://evil.example/clientes/1/extratox HTTP/1.1"), app(404)),
        ("POST to the statement", post("/clientes/1/extrato", VALID), app(404)),
        ("GET on the transaction path", httpc.build("GET", TX), app(404))], make=raw)

    # -- methods and protocol ------------------------------------------------------------------------------------
    for m in ["PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "LOCK"]:
        add("methods", "%s %s" % (m, TX), httpc.build(m, TX, VALID, J), app(404))
        add("methods", "%s /clientes/1/extrato" % m, httpc.build(m, "/clientes/1/extrato"), app(404))
    add("methods", "HEAD %s" % TX, httpc.build("HEAD", TX), app(404), head_only=True)
    table("methods", [
        ("TRACE", httpc.build("TRACE", "/clientes/1/extrato"), nginx(405)),
        ("CONNECT", hand("CONNECT 127.0.0.1:22 HTTP/1.1"), nginx(400)),
        ("lower-case method", hand("get /clientes/1/extrato HTTP/1.1"), nginx(400)),
        ("unknown method FOO", hand("FOO /clientes/1/extrato HTTP/1.1"), any4xx())], make=raw)
    table("protocol", [
        ("HTTP/1.1 without Host", "GET /clientes/1/extrato HTTP/1.1\r\nConnection: close\r\n\r\n", nginx(400)),
        ("two Host headers", "GET /clientes/1/extrato HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", nginx(400)),
        ("HTTP/2 preface on cleartext", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", nginx(400)),
        ("HTTP/3.0", "GET /clientes/1/extrato HTTP/3.0\r\nHost: x\r\n\r\n", nginx(505)),
        ("garbage request line", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + "A" * 40 + "\r\n\r\n", nginx(400)),
        ("header over 8 KiB", httpc.build("GET", "/clientes/1/extrato", None, {"X-Big": "a" * 10000}), nginx(400)),
        ("header name with a space", hand("GET /clientes/1/extrato HTTP/1.1", "Bad Name: 1\r\n"), app_or_get()),
        ("obsolete header folding", JSON_POST + " foo\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", any4xx()),
        ("Expect: 100-continue, refused body", tx(INVAL, {"Expect": "100-continue"}), app(422, "valor")),
        ("Expect: something else", tx(INVAL, {"Expect": "200-ok"}), any4xx())], make=raw)

    # -- slow clients: a byte at a time, or a client that stops sending --------------------------------------
    add("slow clients", "an invalid body, one byte every 10 ms",
        tx('{"valor": 1.5, "tipo": "d", "descricao": "slow"}'), app(422, "valor"), pieces=1, delay=0.01, timeout=30)
    add("slow clients", "truncated JSON, one byte every 10 ms", tx('{"valor": 1, "tipo": "d", "desc'), app(400),
        pieces=1, delay=0.01, timeout=30)
    add("slow clients", "a body shorter than its Content-Length, then the client stops sending",
        json_post("Content-Length: 100\r\n", VALID), none(), half_close=True, timeout=10)
    add("slow clients", "headers never finished, then the client stops sending",
        raw("POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nContent-Type: appl"), none(), half_close=True, timeout=10)
    return out


def error_shape_problem(resp, head=False):
    """None if an API error answer has the documented shape, else what is wrong."""
    ct = (resp.header("content-type") or "").split(";")[0].strip()
    if head and resp.body == b"":
        return None if ct in ("", "application/json") else "content type %s" % ct
    j = resp.json()
    if ct != "application/json":
        return "content type %r" % ct
    if not isinstance(j, dict) or not isinstance(j.get("error"), str) or not j["error"]:
        return "body is not {\"error\": string}: %r" % resp.body[:120]
    if set(j) - {"error", "field"} or ("field" in j and not isinstance(j["field"], str)):
        return "unexpected members: %r" % resp.body[:120]


def judge(exp, resp, err, head=False):
    """(ok, detail): whether the answer (or its absence) is what the case expects."""
    if exp.kind == "none":
        return (True, "no answer (%s)" % err.kind) if err else (400 <= resp.status < 500, "answered %d" % resp.status)
    if err is not None:
        return False, "no answer: %s" % err
    s, inst = resp.status, resp.instance
    who = "%d from %s" % (s, inst or "nginx")
    if s >= 500 and not (exp.kind == "nginx" and exp.status == s):
        return False, "5xx: %s %r" % (who, resp.body[:120])
    problem = inst and s >= 400 and error_shape_problem(resp, head)
    if problem:
        return False, "%s %d without the JSON error shape: %s" % (inst, s, problem)
    if exp.kind in ("get-ok", "any4xx"):
        return 400 <= s < 500 or (s == 200 and exp.kind == "get-ok"), who
    if exp.kind != ("app" if inst else "nginx") or exp.status != s:
        return False, "expected %s, got %s %r" % (exp.describe(), who, resp.body[:100])
    if exp.field and (resp.json() or {}).get("field") != exp.field:
        return False, "expected field %s, got %r" % (exp.field, resp.body[:100])
    return True, who


def judge_direct(resp, err, head=False, connect=False):
    """Straight to an instance (no nginx in front): anything but a 5xx or a malformed error
    body is fine, including no answer (nginx would have stopped it)."""
    if err is not None:
        return True, "no answer (%s)" % err.kind
    if resp.status >= 500:
        return False, "5xx: %d %r" % (resp.status, resp.body[:120])
    if resp.status >= 400 and not resp.instance:
        # The HTTP parser refused the request before any route saw it (bare 400, no body):
        # nginx never lets such a request through.
        return True, "%d from the HTTP parser (no body)" % resp.status
    # Through the router: the API's JSON error. (A response to CONNECT carries no body,
    # whatever its status: NIO drops it.)
    problem = resp.status >= 400 and error_shape_problem(resp, head)
    if problem and not (connect and resp.body == b""):
        return False, "%d without the JSON error shape: %s" % (resp.status, problem)
    return True, str(resp.status)

