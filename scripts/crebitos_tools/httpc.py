"""A small HTTP/1.1 client on asyncio streams (standard library only: the fault tests run on
a fresh Debian with Python 3 and nothing else). request() sends one well-formed request on a
new connection (Connection: close), as the contest's load test does; exchange() sends
arbitrary bytes, optionally trickled in pieces (slow clients), for the hostile corpus. Both
return a Response or raise HTTPError with a short kind: "refused" (nothing listens), "reset"
(the connection died before a complete answer), "timeout"."""
import asyncio
import json
import socket
import time


class HTTPError(Exception):
    def __init__(self, kind, detail=""):
        super().__init__("%s%s" % (kind, ": " + detail if detail else ""))
        self.kind = kind


class Response:
    def __init__(self, status, reason, headers, body, elapsed):
        # headers: lower-case name -> list of values
        self.status, self.reason, self.headers, self.body, self.elapsed = status, reason, headers, body, elapsed

    def header(self, name, default=None):
        return (self.headers.get(name.lower()) or [default])[0]

    @property
    def instance(self):
        return self.header("x-instance")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


async def _read_response(reader, head_only=False):
    """One response: status line, headers, then the body by Content-Length, chunked, or to EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise HTTPError("reset", "connection closed %s" % ("inside the response head" if e.partial else "before any answer"))
    except asyncio.LimitOverrunError:
        raise HTTPError("reset", "response head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HTTPError("reset", "not an HTTP status line: %r" % lines[0][:80])
    status, reason, headers = int(parts[1]), parts[2] if len(parts) > 2 else "", {}
    for name, _, value in (line.partition(":") for line in lines[1:] if line):
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if 100 <= status < 200 and status != 101:  # an interim answer (100 Continue): the real one follows
        return await _read_response(reader, head_only)
    body = b""
    try:
        if head_only or status in (101, 204, 304):
            pass
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"][0]))
        elif "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                body += (await reader.readexactly(size + 2))[:-2]  # the chunk and its CRLF
                if size == 0:
                    break
        else:
            body = await reader.read()
    except asyncio.IncompleteReadError:
        raise HTTPError("reset", "connection closed inside the response body")
    return status, reason, headers, body


async def exchange(data, host="127.0.0.1", port=80, unix_path=None, timeout=10.0,
                   pieces=None, delay=0.0, half_close=False, head_only=False):
    """Sends `data` on a new connection and reads one response. pieces/delay: in pieces of
    that many bytes, `delay` s apart (a slow client); half_close: then shut the write side
    down (a client that gives up sending); head_only: the answer to a HEAD."""
    t0 = time.monotonic()

    async def go():
        try:
            if unix_path:
                reader, writer = await asyncio.open_unix_connection(unix_path, limit=1 << 20)
            else:
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise HTTPError("refused", str(e))
        except OSError as e:
            raise HTTPError("reset", str(e))
        try:
            step = pieces or len(data) or 1
            try:
                for i in range(0, len(data), step):
                    if i and delay:
                        await asyncio.sleep(delay)
                    writer.write(data[i:i + step])
                    await writer.drain()
                if half_close and writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionResetError, BrokenPipeError):
                # The server may answer and close before reading everything (nginx does for
                # a too large body): the answer is still there to read.
                pass
            return Response(*await _read_response(reader, head_only), time.monotonic() - t0)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise HTTPError("reset", str(e))
        finally:
            # abort, not close: close() waits to flush what is still buffered, forever if the
            # server stopped reading (it answered 413 to a huge body, say).
            writer.transport.abort()

    try:
        return await asyncio.wait_for(go(), timeout)
    except asyncio.TimeoutError:
        raise HTTPError("timeout", "no complete answer within %.1fs" % timeout)


def build(method, path, body=None, headers=None, host="127.0.0.1"):
    """The bytes of a well-formed request (Connection: close)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    h = [("Host", host), ("Connection", "close")] + ([("Content-Length", str(len(body)))] if body is not None else [])
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h + list((headers or {}).items()))
    return head.encode("latin-1") + b"\r\n" + (body or b"")


async def request(method, path, body=None, headers=None, host="127.0.0.1", port=80, timeout=10.0):
    return await exchange(build(method, path, body, headers), host=host, port=port, timeout=timeout)


def port_open(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
