"""A small HTTP/1.1 client on asyncio streams, for the fault tests.

Only the standard library: the fault tests must run on a fresh Debian with Python 3 and
nothing else. Two ways in:

  request(...)   one well-formed request on a new connection (Connection: close),
                 the way the contest's load test talks to the stack;
  exchange(...)  arbitrary bytes on a new connection, optionally trickled in pieces
                 (slow clients), for the hostile corpus.

Both return a Response or raise HTTPError with a short kind: "refused" (nothing
listens), "reset" (the connection died before a complete answer), "timeout".
"""
import asyncio
import json
import socket
import time


class HTTPError(Exception):
    def __init__(self, kind, detail=""):
        super().__init__("%s%s" % (kind, ": " + detail if detail else ""))
        self.kind = kind


class Response:
    __slots__ = ("status", "reason", "headers", "body", "elapsed")

    def __init__(self, status, reason, headers, body, elapsed):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> list of values
        self.body = body
        self.elapsed = elapsed

    def header(self, name, default=None):
        v = self.headers.get(name.lower())
        return v[0] if v else default

    @property
    def instance(self):
        return self.header("x-instance")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


async def _read_response(reader, head_only=False):
    """Reads one response: status line, headers, then the body by Content-Length or
    chunked encoding, or until EOF when neither is given."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise HTTPError("reset", "connection closed before any answer")
        raise HTTPError("reset", "connection closed inside the response head")
    except asyncio.LimitOverrunError:
        raise HTTPError("reset", "response head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HTTPError("reset", "not an HTTP status line: %r" % lines[0][:80])
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if 100 <= status < 200 and status != 101:
        # An interim answer (100 Continue): the real one follows.
        return await _read_response(reader, head_only)
    if head_only or status in (204, 304) or status == 101:
        return status, reason, headers, b""
    try:
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"][0]))
        elif "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
            body = b""
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        else:
            body = await reader.read()
    except asyncio.IncompleteReadError:
        raise HTTPError("reset", "connection closed inside the response body")
    return status, reason, headers, body


async def _open(host, port, unix_path=None):
    try:
        if unix_path:
            return await asyncio.open_unix_connection(unix_path, limit=1 << 20)
        return await asyncio.open_connection(host, port, limit=1 << 20)
    except (ConnectionRefusedError, FileNotFoundError) as e:
        raise HTTPError("refused", str(e))
    except OSError as e:
        raise HTTPError("reset", str(e))


async def exchange(data, host="127.0.0.1", port=80, unix_path=None, timeout=10.0,
                   pieces=None, delay=0.0, half_close=False, head_only=False):
    """Sends `data` (bytes) on a new connection and reads one response.

    pieces/delay: send the data in pieces of that many bytes with `delay` seconds
    between them (a slow client). half_close: shut down the write side after sending
    (a client that gives up sending)."""
    t0 = time.monotonic()

    async def go():
        reader, writer = await _open(host, port, unix_path)
        try:
            try:
                if pieces:
                    for i in range(0, len(data), pieces):
                        writer.write(data[i:i + pieces])
                        await writer.drain()
                        if delay and i + pieces < len(data):
                            await asyncio.sleep(delay)
                else:
                    writer.write(data)
                    await writer.drain()
                if half_close and writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionResetError, BrokenPipeError):
                # The server may answer and close before reading everything (nginx does
                # for a too large body): the answer is still there to read.
                pass
            status, reason, headers, body = await _read_response(reader, head_only)
            return Response(status, reason, headers, body, time.monotonic() - t0)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise HTTPError("reset", str(e))
        finally:
            # abort, not close: close() waits to flush what is still buffered, forever if
            # the server stopped reading (it answered 413 to a huge body, say).
            writer.transport.abort()

    try:
        return await asyncio.wait_for(go(), timeout)
    except asyncio.TimeoutError:
        raise HTTPError("timeout", "no complete answer within %.1fs" % timeout)


def build(method, path, body=None, headers=None, host="127.0.0.1"):
    """The bytes of a well-formed request (Connection: close)."""
    h = [("Host", host), ("Connection", "close")]
    if body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        h.append(("Content-Length", str(len(body))))
    for k, v in (headers or {}).items():
        h.append((k, v))
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h) + "\r\n"
    return head.encode("latin-1") + (body or b"")


async def request(method, path, body=None, headers=None, host="127.0.0.1", port=80, timeout=10.0):
    return await exchange(build(method, path, body, headers), host=host, port=port, timeout=timeout)


def port_open(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
