"""extensions/kit/http.py against a real TCP (and TLS) server on this machine.

The server is a scripted asyncio one: each test says what it answers, so
the client's behaviour on keep-alive, chunked and until-close bodies, a
connection the server closed while idle, timeouts and TLS is seen on the
wire, not on a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import trustme

from extensions.kit.http import ConnectFailed, HttpClient, HttpProtocolError


@dataclass
class Seen:
    head: str
    body: bytes
    connection: int  # which connection (1, 2, ...) it came on


Answer = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]  # False: close the connection after


@dataclass
class Server:
    """Reads HTTP/1.1 requests with Content-Length bodies; ``answer`` writes the response."""

    answer: Answer
    context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.address = self._server.sockets[0].getsockname()
        port = self.address[1]
        return f"{'https' if self.context else 'http'}://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                seen = Seen(head, await reader.readexactly(length), number)
                self.seen.append(seen)
                if not await self.answer(seen, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close_idle(self) -> None:
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.05)  # the FIN reaches the client

    async def stop(self) -> None:
        self._server.close()
        for writer in self.writers:
            writer.close()


def ok(body: bytes = b'{"ok": true}', extra: str = "") -> Answer:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
        return "connection: close" not in extra.lower()
    return answer


async def served(answer: Answer, context: ssl.SSLContext | None = None) -> tuple[Server, str]:
    server = Server(answer, context)
    return server, await server.start()


@contextlib.asynccontextmanager
async def talking_to(answer: Answer, context: ssl.SSLContext | None = None, path: str = "",
                     **options: Any) -> AsyncIterator[tuple[Server, HttpClient]]:
    """The scripted server and a client of it (its base URL plus ``path``), both closed after."""
    server, url = await served(answer, context)
    client = HttpClient(url + path, **options)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


async def test_sequential_requests_share_one_connection_and_carry_method_path_headers_body() -> None:
    async with talking_to(ok(), path="/prefix", headers={"X-Token": "t"}) as (server, client):
        first = await client.request("POST", "/v1/txn?dc=a%20b", b'{"a": 1}', {"Content-Type": "application/json"})
        second = await client.request("GET", "/v1/x")
    assert (first.status, first.reason, first.content) == (200, "OK", b'{"ok": true}')
    assert second.status == 200
    assert [s.connection for s in server.seen] == [1, 1]
    head = server.seen[0].head
    assert head.startswith("POST /prefix/v1/txn?dc=a%20b HTTP/1.1\r\n")
    port = server.address[1]
    assert f"Host: 127.0.0.1:{port}\r\n" in head and "X-Token: t\r\n" in head
    assert "Content-Type: application/json\r\n" in head and "Content-Length: 8\r\n" in head
    assert server.seen[0].body == b'{"a": 1}'
    assert "Content-Length" not in server.seen[1].head  # a GET without a body says nothing of one


async def test_chunked_and_until_close_bodies_are_read_whole_and_headers_are_case_insensitive() -> None:
    async def chunked(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.head.startswith("GET /chunked"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        return False

    async with talking_to(chunked) as (server, client):
        first = await client.request("GET", "/chunked")
        second = await client.request("GET", "/close")
        third = await client.request("GET", "/chunked")
    assert first.content == b"hello world" and first.header("retry-after") == "3" and first.header("Retry-After") == "3"
    assert second.content == b"until the end"
    assert third.content == b"hello world"
    assert [s.connection for s in server.seen] == [1, 1, 2]  # the closed one is not used again


async def test_an_error_status_is_an_answer_and_a_204_has_no_body() -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if "/missing" in seen.head.split("\r\n")[0]:
            writer.write(b'HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{"code": 404}')
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    async with talking_to(answer) as (server, client):
        missing = await client.request("GET", "/missing")
        empty = await client.request("DELETE", "/thing")
        again = await client.request("GET", "/missing")
    assert (missing.status, missing.reason, missing.content) == (404, "Not Found", b'{"code": 404}')
    assert (empty.status, empty.content) == (204, b"")
    assert again.status == 404
    assert {s.connection for s in server.seen} == {1}


def closes_on_the_second_request() -> Answer:
    """Answers, except the second request on the first connection: closed unanswered (an idle timeout's race)."""
    on_first: list[Seen] = []

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.connection == 1:
            on_first.append(seen)
            if len(on_first) == 2:
                return False
        return await ok()(seen, writer)
    return answer


async def test_a_get_on_a_connection_the_server_closed_unanswered_is_sent_again_on_a_new_one() -> None:
    async with talking_to(closes_on_the_second_request()) as (server, client):
        await client.request("GET", "/a")
        again = await client.request("GET", "/b")
    assert again.status == 200
    assert [(s.head.split(" ")[1], s.connection) for s in server.seen] == [("/a", 1), ("/b", 1), ("/b", 2)]


async def test_a_post_on_a_connection_the_server_closed_unanswered_is_not_sent_twice() -> None:
    async with talking_to(closes_on_the_second_request()) as (server, client):
        await client.request("GET", "/a")
        with pytest.raises(HttpProtocolError, match="closed the connection before answering"):
            await client.request("POST", "/b", b"{}")
        after = await client.request("POST", "/c", b"{}")  # the next one takes a new connection
    assert after.status == 200
    assert [(s.head.split(" ")[1], s.connection) for s in server.seen] == [("/a", 1), ("/b", 1), ("/c", 2)]


async def test_a_connection_closed_while_idle_is_not_taken_again() -> None:
    async with talking_to(ok()) as (server, client):
        await client.request("GET", "/a")
        await server.close_idle()
        answer = await client.request("POST", "/b", b"{}")
    assert answer.status == 200
    assert [s.connection for s in server.seen] == [1, 2]


async def test_a_connection_that_dies_mid_answer_is_an_error_not_a_short_body() -> None:
    async def half(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        return False

    async with talking_to(half) as (server, client):
        with pytest.raises(HttpProtocolError, match="in the middle of the answer"):
            await client.request("GET", "/x")


async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_not_reused() -> None:
    async def slow(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if "/slow" in seen.head.split("\r\n")[0]:
            await asyncio.sleep(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    async with talking_to(slow, timeout=0.2) as (server, client):
        with pytest.raises(TimeoutError):
            await client.request("GET", "/slow")
        fast = await client.request("GET", "/fast")
    assert fast.content == b"ok"
    assert [s.connection for s in server.seen] == [1, 2]  # a late answer on 1 cannot be taken for /fast's


async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    async def garbage(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return True

    async with talking_to(garbage) as (server, client):
        with pytest.raises(HttpProtocolError, match="unreadable HTTP answer"):
            await client.request("GET", "/x")


async def test_nobody_listening_is_connect_failed_with_the_address() -> None:
    server, url = await served(ok())
    await server.stop()
    await asyncio.sleep(0.05)
    client = HttpClient(url)
    with pytest.raises(ConnectFailed, match="cannot connect to 127.0.0.1:") as caught:
        await client.request("GET", "/x")
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


async def test_no_more_connections_than_the_limit() -> None:
    async def slowish(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    async with talking_to(slowish, limit=3) as (server, client):
        answers = await asyncio.gather(*(client.request("GET", f"/{i}") for i in range(12)))
    assert [a.content for a in answers] == [b"ok"] * 12
    assert server.connections == 3


def test_a_header_that_could_smuggle_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        HttpClient("http://127.0.0.1:1", headers={"X-Consul-Token": "a\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="not an http"):
        HttpClient("ftp://example.com")


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    return ca, server_context


async def test_tls_is_verified_against_the_given_ca(tls) -> None:
    ca, server_context = tls
    server, url = await served(ok(), server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    good, default = HttpClient(url, ssl=trusting), HttpClient(url)
    try:
        assert (await good.request("GET", "/x")).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            await default.request("GET", "/x")  # the system's CAs do not know this one
    finally:
        await good.close()
        await default.close()
        await server.stop()


async def test_verification_is_off_only_when_asked(tls) -> None:
    _, server_context = tls
    async with talking_to(ok(), server_context, ssl=False) as (server, client):
        assert (await client.request("GET", "/x")).status == 200


async def test_a_request_waiting_for_a_connection_runs_out_of_time_and_the_others_still_get_theirs() -> None:
    async def slowish(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.3)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    async with talking_to(slowish, limit=1, timeout=5) as (server, client):
        first = asyncio.create_task(client.request("GET", "/first"))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await client.request("GET", "/impatient", timeout=0.1)  # waits for the one connection in use
        later = await client.request("GET", "/later")
        assert (await first).content == b"ok"
    assert later.content == b"ok"
    assert [s.head.split(" ")[1] for s in server.seen] == ["/first", "/later"]
    assert server.connections == 1


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "raw deflate"])
async def test_no_compression_is_asked_for_but_a_compressed_answer_is_read(coding: str) -> None:
    import zlib
    text = b'[{"Node": "web.example.com"}]' * 100
    packed = {"gzip": lambda b: zlib.compress(b, wbits=31), "x-gzip": lambda b: zlib.compress(b, wbits=31),
              "deflate": zlib.compress,
              "raw deflate": lambda b: zlib.compress(b, wbits=-15)}[coding](text)
    header = coding.replace("raw ", "")

    async def compressing(seen: Seen, writer: asyncio.StreamWriter) -> bool:  # as a proxy between might
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Encoding: {header}\r\nContent-Length: {len(packed)}\r\n\r\n".encode()
                     + packed)
        return True

    async with talking_to(compressing) as (server, client):
        answer = await client.request("GET", "/v1/internal/ui/nodes")
    assert answer.content == text
    assert "Accept-Encoding: identity\r\n" in server.seen[0].head


async def test_an_answer_in_a_coding_it_cannot_read_is_an_error_not_garbage() -> None:
    async def brotli(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\n\x0b\x02\x80x")
        return True

    async with talking_to(brotli) as (server, client):
        with pytest.raises(HttpProtocolError, match="content coding 'br'"):
            await client.request("GET", "/x")


async def test_an_answer_that_ended_with_its_connection_is_not_taken_for_the_next_requests() -> None:
    """A 204 has no body and, from Go servers, no Content-Length; the next request's connection then dies."""
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.head.startswith("DELETE"):
            writer.write(b"HTTP/1.1 204 No Content\r\nX-Req: 1\r\n\r\n")
            return True
        return seen.connection != 1  # the POST on the same connection: closed unanswered

    async with talking_to(answer) as (server, client):
        assert (await client.request("DELETE", "/v1/thing")).status == 204
        with pytest.raises(HttpProtocolError, match="before answering"):
            await client.request("POST", "/v1/txn", b"{}")


async def test_a_connection_reset_in_an_until_close_body_is_an_error_not_a_short_body() -> None:
    async def reset(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":')
        await writer.drain()
        await asyncio.sleep(0.05)  # the part is read
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with no linger: a reset, not a close
        return False

    async with talking_to(reset) as (server, client):
        with pytest.raises(OSError):
            await client.request("GET", "/x")


async def test_an_informational_answer_is_skipped_for_the_real_one() -> None:
    async def early(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                     b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        return True

    async with talking_to(early) as (server, client):
        answer = await client.request("POST", "/x", b"{}")
    assert (answer.status, answer.content) == (201, b"{}")


async def test_an_empty_answer_marked_compressed_is_empty() -> None:
    async def empty(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n")
        return True

    async with talking_to(empty) as (server, client):
        answer = await client.request("DELETE", "/mgmt/tm/ltm/pool/~Common~p")
    assert (answer.status, answer.content) == (200, b"")


async def test_a_request_line_that_could_smuggle_another_is_refused_and_we_say_who_we_are() -> None:
    async with talking_to(ok()) as (server, client):
        for method, target in (("GET", "/x HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /y"), ("GET", "/a b"),
                               ("GE T", "/x"), ("GET\r\n", "/x")):
            with pytest.raises(ValueError, match="not a request line"):
                await client.request(method, target)
        await client.request("GET", "/x")
    assert len(server.seen) == 1 and "User-Agent: interlook\r\n" in server.seen[0].head


async def test_a_post_on_a_connection_found_closed_before_writing_is_sent_on_a_new_one() -> None:
    async with talking_to(ok()) as (server, client):
        await client.request("GET", "/a")
        (idle,) = client._idle  # noqa: SLF001
        assert idle.transport is not None
        idle.transport.close()  # closing, and the loop has not yet told the protocol
        answer = await client.request("POST", "/b", b"{}")
    assert answer.status == 200
    assert [(s.head.split(" ")[1], s.connection) for s in server.seen] == [("/a", 1), ("/b", 2)]


async def test_requests_waiting_for_a_connection_are_served_in_turn_not_starved() -> None:
    server, url = await served(ok())
    client = HttpClient(url, limit=1, timeout=5)
    busy_done = 0
    patients_done: list[int] = []  # how many of the busy one's requests were done when each patient was
    started = asyncio.Event()

    async def busy() -> None:
        nonlocal busy_done
        while len(patients_done) < 2 and busy_done < 2000:  # back to back, as long as the others wait
            started.set()  # (the patients ask while this one's request is on the connection)
            await client.request("GET", f"/busy-{busy_done}")
            busy_done += 1

    async def patient() -> None:
        await started.wait()
        await client.request("GET", "/patient")
        patients_done.append(busy_done)

    try:
        await asyncio.gather(busy(), patient(), patient())
    finally:
        await client.close()
        await server.stop()
    assert len(patients_done) == 2
    assert max(patients_done) <= 3  # each served at its turn, not once the busy one stopped


async def test_connections_unused_for_too_long_are_closed_even_while_a_newer_one_is_busy() -> None:
    async def slowish(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.02)
        return await ok()(seen, writer)

    async with talking_to(slowish, keepalive=1.0) as (server, client):
        await asyncio.gather(*(client.request("GET", f"/{i}") for i in range(3)))  # 3 connections
        await asyncio.sleep(0.5)
        await client.request("GET", "/fresh")  # refreshes one of them
        await asyncio.sleep(0.6)  # the other two are now unused for 1.1 s, the newest for 0.6 s
        await client.request("GET", "/again")
        open_now = client._open  # noqa: SLF001
    assert server.connections == 3
    assert open_now == 1
