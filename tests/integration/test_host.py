"""
mailprotod, the standalone host, driven by real clients over real sockets, with the echo protocol:
listeners, TLS (implicit, STARTTLS, required), host limits, hot reload by generations, the control
commands (-t, -s reload|stop|status), signals, the pid file and the privilege drop.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (ECHO_V2_SO, IO_TIMEOUT, SERVER_NAME, LineClient, Listener,
                      client_context, ipv6_available, listening_socket_inode, port_accepts, port_refused,
                      wait_for)

GREETING = "+OK echo ready"
GREETING_V2 = "+OK echo2 ready"


def swap_module(srv, new_so=ECHO_V2_SO):
    """Replaces the server's mod_echo.so as an admin would: copy to a temp name in the same folder, rename."""
    target = srv.module_dir / "mod_echo.so"
    tmp = srv.module_dir / ".mod_echo.so.new"
    shutil.copyfile(new_so, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


def assert_ctl_ok(r, what):
    assert r.returncode == 0, f"{what}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def new_greeting(port, **kw):
    with LineClient.connect(port, **kw) as c:
        return c.greeting


# ---------------------------------------------------------------------------------------------------------
# listeners, status, log

def test_configured_port_answers_unconfigured_is_closed(make_server, free_port):
    port, other = free_port(), free_port()
    srv = make_server([Listener(port)]).start()

    with LineClient.connect(port, greeting=False) as c:
        assert c.readline_raw() == b"+OK echo ready\r\n"
        assert c.cmd("hello world") == "+OK echo: hello world"
        assert c.cmd("second line") == "+OK echo: second line"
        # pipelined lines are answered in order
        c.send("a\r\nb\r\nc\r\n")
        assert [c.readline() for _ in range(3)] == ["+OK echo: a", "+OK echo: b", "+OK echo: c"]
        c.quit()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=IO_TIMEOUT).close()
    assert srv.alive()


def test_status_json(make_server, free_port):
    p1, p2 = free_port(), free_port()
    srv = make_server([Listener(p1), Listener(p2, tls="implicit")]).start()
    with LineClient.connect(p1) as c:
        assert c.greeting == GREETING

        def one_session():
            st = srv.status()
            ls = {l["address"]: l for l in st["listeners"]}
            return ls[f"127.0.0.1:{p1}"]["sessions"] == 1 and st
        st = wait_for(one_session, 10, "status to count the open session")
        assert st["pid"] == srv.pid
        ls = {l["address"]: l for l in st["listeners"]}
        assert set(ls) == {f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"}
        assert ls[f"127.0.0.1:{p1}"]["protocol"] == "echo"
        assert ls[f"127.0.0.1:{p1}"]["tls"] == "off"
        assert ls[f"127.0.0.1:{p2}"]["tls"] == "implicit"
        assert ls[f"127.0.0.1:{p2}"]["sessions"] == 0
        mods = [m for m in st["modules"] if m["name"] == "echo"]
        assert len(mods) == 1, st["modules"]
        m = mods[0]
        assert m["generation"] == 1
        assert m["sessions"] == 1
        assert os.path.isabs(m["file"]) and os.path.realpath(m["file"]) == os.path.realpath(srv.module_dir / "mod_echo.so")
        assert "version" in m
        c.quit()


def test_log_format(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)]).start()
    with LineClient.connect(port) as c:
        c.quit()
    # echo logs "echo session started" (msgid 20001, debug) through the host for every session
    pat = re.compile(r"\b(?i:debug)\b \[mp20001\] s=\d+ 127\.0\.0\.1(:\d+)? echo session started$")
    wait_for(lambda: any(pat.search(l) for l in srv.stderr_text().splitlines()), 10,
             "a log line 'TIMESTAMP debug [mp20001] s=ID PEER echo session started'")
    line_re = re.compile(r"^\S+ (?i:error|warn|notice|info|debug) \[mp\d{5}\] (s=\d+ \S+ )?\S.*$")
    for line in srv.stderr_text().splitlines():
        assert line_re.match(line), f"log line not 'TIMESTAMP level [mpNNNNN] [s=ID PEER] message': {line!r}"


def test_ipv6_listener(make_server, free_port):
    if not ipv6_available():
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    srv = make_server([Listener(port, host="::1")]).start()
    with LineClient.connect(port, host="::1") as c:
        assert c.greeting == GREETING
        assert c.cmd("over v6") == "+OK echo: over v6"
        c.quit()
    assert f"[::1]:{port}" in srv.listener_status()


# ---------------------------------------------------------------------------------------------------------
# TLS

def test_implicit_tls_python(make_server, free_port, tls_ctx):
    port = free_port()
    make_server([Listener(port, tls="implicit")]).start()
    with LineClient.connect(port, tls=tls_ctx) as c:
        assert c.greeting == GREETING
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3"), c.sock.version()
        assert c.cmd("secret line") == "+OK echo: secret line"
        c.quit()


def test_implicit_tls_refuses_plaintext_client(make_server, free_port):
    """An implicit TLS port never speaks plaintext: a plaintext client gets no greeting."""
    port = free_port()
    make_server([Listener(port, tls="implicit")]).start()
    with LineClient.connect(port, greeting=False) as c:
        c.send("hello\r\n")
        try:
            data = c.read_until_eof(timeout=IO_TIMEOUT)
        except socket.timeout:
            data = []
        assert not any("+OK" in l for l in data), data


def s_client(port, *extra, stdin="", timeout=30):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME,
                           "-quiet", *extra], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_implicit_tls_openssl_s_client(make_server, free_port, tls_cert):
    port = free_port()
    make_server([Listener(port, tls="implicit")]).start()
    r = s_client(port, "-CAfile", str(tls_cert[0]), "-verify_return_error", stdin="hello s_client\r\nQUIT\r\n")
    out = r.stdout.splitlines()
    assert "+OK echo ready" in out, (r.stdout, r.stderr)
    assert "+OK echo: hello s_client" in out, (r.stdout, r.stderr)
    assert "+OK bye" in out, (r.stdout, r.stderr)


def test_tls_1_1_refused(make_server, free_port, tls_cert):
    port = free_port()
    make_server([Listener(port, tls="implicit")]).start()
    # The same client can do TLS 1.2 with this server ...
    ok = s_client(port, "-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0", stdin="QUIT\r\n")
    assert "+OK echo ready" in ok.stdout, (ok.stdout, ok.stderr)
    # ... and is willing to do TLS 1.1 (security level 0), which the server must refuse.
    r = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", stdin="QUIT\r\n")
    assert "no protocols available" not in r.stderr, "the client could not even offer TLS 1.1: " + r.stderr
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "+OK" not in r.stdout, r.stdout


def test_starttls_discards_injected_input(make_server, free_port, tls_ctx):
    port = free_port()
    make_server([Listener(port, tls="starttls")]).start()
    with LineClient.connect(port) as c:
        assert c.greeting == GREETING
        assert c.cmd("before tls") == "+OK echo: before tls"
        # STARTTLS and a smuggled command in one segment, before the handshake (RFC 3207 section 4.2)
        c.send(b"STARTTLS\r\nINJECTED\r\n")
        assert c.readline() == "+OK begin TLS"
        leaked = c.buf + c.raw_pending(0.3)
        assert leaked == b"", f"server sent plaintext after '+OK begin TLS': {leaked!r}"
        try:
            c.starttls(tls_ctx)
        except ssl.SSLError as e:
            pytest.fail(f"TLS handshake after STARTTLS failed: {e!r}")
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert c.cmd("after tls") == "+OK echo: after tls"
        assert c.cmd("STARTTLS") == "-ERR TLS already active"
        assert c.cmd("QUIT") == "+OK bye"
        rest = c.read_until_eof()
        everything = c.lines + rest
        assert not any("INJECTED" in l for l in everything), everything


def test_tls_required(make_server, free_port, tls_ctx):
    port = free_port()
    make_server([Listener(port, tls="required")]).start()
    with LineClient.connect(port) as c:
        assert c.greeting == GREETING
        assert c.cmd("hello") == "-ERR TLS required, send STARTTLS first"
        assert c.cmd("STARTTLS") == "+OK begin TLS"
        c.starttls(tls_ctx)
        assert c.cmd("hello") == "+OK echo: hello"
        c.quit()
    # QUIT is allowed before TLS
    with LineClient.connect(port) as c:
        c.quit()


# ---------------------------------------------------------------------------------------------------------
# host limits

def test_line_too_long_without_line_end(make_server, free_port):
    port = free_port()
    make_server([Listener(port)], MaxLineLength="1024").start()
    with LineClient.connect(port) as c:
        assert c.cmd("x" * 1000) == "+OK echo: " + "x" * 1000      # under the limit: fine
        c.send("y" * 3000)                                          # no line end
        assert c.read_until_eof() == ["-ERR line too long"]


@pytest.mark.parametrize("max_line", [1024, 8192])
def test_line_too_long_complete_line(make_server, free_port, max_line):
    """A complete line (line end included) over MaxLineLength, in one segment, is refused too."""
    port = free_port()
    make_server([Listener(port)], MaxLineLength=str(max_line)).start()
    with LineClient.connect(port) as c:
        c.send("z" * (max_line + 1) + "\r\n")
        rest = c.read_until_eof()
        assert rest == ["-ERR line too long"], [l[:60] + f"...({len(l)} chars)" for l in rest]


@pytest.mark.parametrize("max_line", [1024, 8192])
def test_line_at_limit_accepted(make_server, free_port, max_line):
    """MaxLineLength bytes including the line end is within the limit whichever way one counts."""
    port = free_port()
    make_server([Listener(port)], MaxLineLength=str(max_line)).start()
    with LineClient.connect(port) as c:
        body = "w" * (max_line - 2)
        assert c.cmd(body) == "+OK echo: " + body
        c.quit()


def test_client_that_reads_late_gets_every_reply(make_server, free_port):
    """A client that sends much before it reads: input waits while 256 KB of replies are queued, and is
    delivered again as they drain, until every line is answered (it used to stall with a full buffer)."""
    port = free_port()
    make_server([Listener(port)]).start()
    n, body = 100000, "x" * 90
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        f = s.makefile("rb")
        assert f.readline() == (GREETING + "\r\n").encode()
        sender = threading.Thread(target=s.sendall, args=((body + "\r\n").encode() * n,))
        sender.start()
        time.sleep(2)   # the scenario: replies pile up in the server while this client does not read
        want = ("+OK echo: " + body + "\r\n").encode()
        for i in range(n):
            line = f.readline()
            assert line == want, f"reply {i + 1} of {n}: {line[:60]!r}"
        sender.join(60)
        assert not sender.is_alive()


@pytest.mark.parametrize("tls", ["off", "implicit", "starttls"])
def test_idle_timeout(make_server, free_port, tls_ctx, tls):
    port = free_port()
    make_server([Listener(port, tls=tls)], IdleTimeout="1s").start()
    with LineClient.connect(port, tls=tls_ctx if tls == "implicit" else None) as c:
        if tls == "starttls":
            assert c.cmd("STARTTLS") == "+OK begin TLS"
            c.starttls(tls_ctx)
        t0 = time.monotonic()
        assert c.cmd("still here") == "+OK echo: still here"
        line = c.readline(timeout=15)
        elapsed = time.monotonic() - t0
        assert line == "-ERR idle timeout"
        assert elapsed >= 0.8, f"idle timeout fired after {elapsed:.2f}s with IdleTimeout 1s"
        assert c.at_eof()


@pytest.mark.parametrize("when", ["implicit TLS, no ClientHello", "after STARTTLS, no ClientHello"])
def test_idle_timeout_in_tls_handshake(make_server, free_port, when):
    """A client that never starts its handshake is closed after IdleTimeout too."""
    port = free_port()
    srv = make_server([Listener(port, tls="implicit" if "implicit" in when else "starttls")], IdleTimeout="1s").start()
    with LineClient.connect(port, greeting=False) as c:
        if "STARTTLS" in when:
            assert c.readline() == GREETING
            assert c.cmd("STARTTLS") == "+OK begin TLS"
        t0 = time.monotonic()
        c.read_until_eof(timeout=15)   # whatever comes (nothing, or a TLS alert), the close must come
        assert time.monotonic() - t0 >= 0.8
    assert srv.alive()


def test_idle_timeout_milliseconds_and_activity(make_server, free_port):
    port = free_port()
    make_server([Listener(port)], IdleTimeout="1500ms").start()
    with LineClient.connect(port) as c:
        # activity keeps the session alive past the timeout
        start = time.monotonic()
        while time.monotonic() - start < 2.5:
            assert c.cmd("ping") == "+OK echo: ping"
            time.sleep(0.3)   # pacing the client, well below the timeout
        assert c.readline(timeout=15) == "-ERR idle timeout"
        assert c.at_eof()


def test_max_connections(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port, directives={"MaxConnections": "2"})]).start()
    a = LineClient.connect(port)
    b = LineClient.connect(port)
    try:
        assert a.greeting == GREETING and b.greeting == GREETING
        with LineClient.connect(port, greeting=False) as c:
            assert c.read_until_eof() == ["-ERR too many connections"]
        # the two admitted sessions are unaffected
        assert a.cmd("a") == "+OK echo: a"
        assert b.cmd("b") == "+OK echo: b"
        a.quit()

        # a slot is free again once the server has seen the session go
        def admitted():
            with LineClient.connect(port) as c:
                if c.greeting == GREETING:
                    c.quit()
                    return True
                return False
        wait_for(admitted, 10, "a new connection to be admitted after one session quit")
    finally:
        a.close()
        b.close()
    assert srv.alive()


@pytest.mark.parametrize("where", ["global", "listen"])
def test_max_connections_per_client(make_server, free_port, where):
    port, other_port = free_port(), free_port()
    if where == "global":
        listeners = [Listener(port), Listener(other_port)]
        srv = make_server(listeners, MaxConnections="100", MaxConnectionsPerClient="2")
    else:
        listeners = [Listener(port, directives={"MaxConnectionsPerClient": "2"}), Listener(other_port)]
        srv = make_server(listeners, MaxConnections="100", MaxConnectionsPerClient="50")
    srv.start()
    a = LineClient.connect(port)
    b = LineClient.connect(port)
    try:
        assert a.greeting == GREETING and b.greeting == GREETING
        with LineClient.connect(port, greeting=False) as c:
            assert c.read_until_eof() == ["-ERR too many connections"]
        # another client address is counted on its own
        with LineClient.connect(port, source="127.0.0.2") as d:
            assert d.greeting == GREETING
            assert d.cmd("other client") == "+OK echo: other client"
            d.quit()
        # and so is another listener
        with LineClient.connect(other_port) as e:
            assert e.greeting == GREETING
            e.quit()
        assert a.cmd("a") == "+OK echo: a"
        b.quit()
        wait_for(lambda: new_greeting(port) == GREETING, 10, "a slot for this client after one session quit")
    finally:
        a.close()
        b.close()


def test_max_connections_is_per_listener(make_server, free_port):
    p1, p2 = free_port(), free_port()
    make_server([Listener(p1), Listener(p2)], MaxConnections="1").start()
    a = LineClient.connect(p1)
    b = LineClient.connect(p2)
    try:
        assert a.greeting == GREETING and b.greeting == GREETING
        with LineClient.connect(p1, greeting=False) as c:
            assert c.read_until_eof() == ["-ERR too many connections"]
    finally:
        a.close()
        b.close()


def test_too_many_errors(make_server, free_port):
    port = free_port()
    make_server([Listener(port)], MaxErrors="3").start()
    with LineClient.connect(port) as c:
        assert c.cmd("") == "-ERR empty line"
        assert c.cmd("fine") == "+OK echo: fine"
        assert c.cmd("") == "-ERR empty line"
        c.send("\r\n")   # the third error
        rest = c.read_until_eof()
        assert rest and rest[-1] == "-ERR too many errors", rest
        assert rest[:-1] in ([], ["-ERR empty line"]), rest


# ---------------------------------------------------------------------------------------------------------
# input handling and robustness

def test_partial_lines_byte_by_byte(make_server, free_port, tls_ctx):
    port, tport = free_port(), free_port()
    make_server([Listener(port), Listener(tport, tls="implicit")]).start()
    for c in (LineClient.connect(port), LineClient.connect(tport, tls=tls_ctx)):
        with c:
            if not isinstance(c.sock, ssl.SSLSocket):
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in b"split line\r\n":
                c.send(bytes([b]))
            assert c.readline() == "+OK echo: split line"
            c.send(b"bare lf\n")
            assert c.readline() == "+OK echo: bare lf"
            c.quit()


def test_pipelined_burst(make_server, free_port):
    """Thousands of pipelined lines in one write: every reply, in order (output back-pressure)."""
    port = free_port()
    make_server([Listener(port)]).start()
    n = 5000
    with LineClient.connect(port, timeout=30) as c:
        payload = "".join(f"line {i}\r\n" for i in range(n)).encode()
        sender = threading.Thread(target=c.sock.sendall, args=(payload,), daemon=True)
        sender.start()
        for i in range(n):
            assert c.readline() == f"+OK echo: line {i}"
        sender.join(10)
        c.quit()


def test_concurrent_sessions(make_server, free_port, tls_ctx):
    port, tport = free_port(), free_port()
    srv = make_server([Listener(port), Listener(tport, tls="implicit")]).start()
    errors = []

    def client(k):
        try:
            tls = k % 3 == 0
            with LineClient.connect(tport if tls else port, tls=tls_ctx if tls else None, timeout=30) as c:
                assert c.greeting == GREETING
                for i in range(20):
                    line = f"client {k} line {i}"
                    got = c.cmd(line)
                    assert got == "+OK echo: " + line, got
                c.quit()
        except BaseException as e:  # noqa: BLE001 - collected
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients still running after 60s"
    assert errors == []
    wait_for(lambda: all(l["sessions"] == 0 for l in srv.status()["listeners"]), 10,
             "every listener's session count back to 0")


def test_abrupt_clients_do_not_leak(make_server, free_port, tls_ctx):
    """Clients that vanish (reset, half a line, half a handshake) leave no session behind."""
    port, tport = free_port(), free_port()
    srv = make_server([Listener(port), Listener(tport, tls="implicit")]).start()
    for i in range(10):
        c = LineClient.connect(port)
        c.send("half a li")
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        c.close()
        raw = socket.create_connection(("127.0.0.1", tport), timeout=IO_TIMEOUT)
        raw.sendall(b"\x16\x03\x01\x00")   # the start of a TLS record, then gone
        raw.close()
    with LineClient.connect(tport, tls=tls_ctx) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert srv.alive()

    def idle():
        st = srv.status()
        return all(l["sessions"] == 0 for l in st["listeners"]) and \
            all(m["sessions"] == 0 for m in st["modules"]) and st
    wait_for(idle, 15, "every session count back to 0")
    with LineClient.connect(port) as c:
        c.quit()


# ---------------------------------------------------------------------------------------------------------
# reload

def test_reload_new_module_generation(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)], copy_modules=True).start()
    module_file = os.path.realpath(srv.module_dir / "mod_echo.so")
    old = LineClient.connect(port)
    try:
        assert old.greeting == GREETING
        assert old.cmd("x") == "+OK echo: x"

        swap_module(srv)
        r = srv.ctl("-s", "reload")
        assert_ctl_ok(r, "-s reload after swapping the module")

        # the open session keeps its code ...
        assert old.cmd("x") == "+OK echo: x"
        # ... new sessions run the new one
        with LineClient.connect(port) as new:
            assert new.greeting == GREETING_V2
            assert new.cmd("x") == "+OK echo2: x"

            def both_generations():
                mods = srv.modules()
                return set(mods) == {1, 2} and all(m["sessions"] == 1 for m in mods.values()) and mods
            mods = wait_for(both_generations, 10, "status to list echo generations 1 and 2 with 1 session each")
            for m in mods.values():
                assert os.path.realpath(m["file"]) == module_file, m
            assert srv.listener_status()[f"127.0.0.1:{port}"]["sessions"] == 2

            old.quit()
            mods = wait_for(lambda: set(srv.modules()) == {2} and srv.modules(), 10,
                            "generation 1 to disappear from status after its last session quit")
            assert mods[2]["sessions"] == 1
            # the old session's module is gone; the old session's close did not disturb the new one
            assert new.cmd("y") == "+OK echo2: y"
            new.quit()
        with LineClient.connect(port) as c:
            assert c.greeting == GREETING_V2
            c.quit()
    finally:
        old.close()


def test_reload_back_and_forth(make_server, free_port):
    """Each change of the file is a new generation: v1 -> v2 -> v1 again runs the right code every time."""
    port = free_port()
    srv = make_server([Listener(port)], copy_modules=True).start()
    v1 = srv.dir / "v1.so"
    shutil.copyfile(srv.module_dir / "mod_echo.so", v1)
    for so, greeting, gen in ((ECHO_V2_SO, GREETING_V2, 2), (v1, GREETING, 3)):
        swap_module(srv, so)
        assert_ctl_ok(srv.ctl("-s", "reload"), f"reload to generation {gen}")
        with LineClient.connect(port) as c:
            assert c.greeting == greeting
            assert c.cmd("q") == greeting.replace(" ready", ": q")
            c.quit()
        wait_for(lambda: set(srv.modules()) == {gen}, 10, f"only generation {gen} in status")


def test_reload_unchanged_keeps_generation(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)], copy_modules=True).start()
    assert_ctl_ok(srv.ctl("-s", "reload"), "reload of an unchanged configuration")
    assert set(srv.modules()) == {1}
    with LineClient.connect(port) as c:
        assert c.greeting == GREETING
        c.quit()


def test_reload_module_overwritten_in_place(make_server, free_port):
    """`cp new.so mod_echo.so` rewrites the loaded file's inode in place: the old generation, running from
    the server's private copy, must not notice; the reload loads the new code."""
    port = free_port()
    srv = make_server([Listener(port)], copy_modules=True).start()
    old = LineClient.connect(port)
    try:
        assert old.cmd("x") == "+OK echo: x"
        target = srv.module_dir / "mod_echo.so"
        inode = target.stat().st_ino
        with open(ECHO_V2_SO, "rb") as src, open(target, "r+b") as dst:
            data = src.read()
            dst.seek(0)
            dst.write(data)
            dst.truncate(len(data))
        assert target.stat().st_ino == inode
        assert old.cmd("during") == "+OK echo: during"
        assert_ctl_ok(srv.ctl("-s", "reload"), "reload after overwriting the module in place")
        assert new_greeting(port) == GREETING_V2
        assert old.cmd("after") == "+OK echo: after"
        old.quit()
        wait_for(lambda: set(srv.modules()) == {2}, 10, "only generation 2 in status")
    finally:
        old.close()


def test_reload_broken_module_keeps_running(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)], copy_modules=True).start()
    old = LineClient.connect(port)
    try:
        target = srv.module_dir / "mod_echo.so"
        tmp = srv.module_dir / ".mod_echo.so.new"
        tmp.write_bytes(b"this is not a shared object\n" * 10)
        os.replace(tmp, target)
        r = srv.ctl("-s", "reload")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "mod_echo.so" in r.stderr, r.stderr
        assert srv.alive()
        assert old.cmd("x") == "+OK echo: x"
        assert new_greeting(port) == GREETING
        assert set(srv.modules()) == {1}
        # a good file again: reloads
        swap_module(srv)
        assert_ctl_ok(srv.ctl("-s", "reload"), "reload after the module was fixed")
        assert new_greeting(port) == GREETING_V2
        old.quit()
    finally:
        old.close()


def test_reload_bad_config_keeps_running(make_server, free_port):
    port = free_port()
    good = [Listener(port)]
    srv = make_server(good).start()
    old = LineClient.connect(port)
    try:
        assert old.greeting == GREETING

        # 1. an unknown directive
        srv.configure(good, extra_lines=["NoSuchDirective on"])
        line = srv.line_of("NoSuchDirective")
        r = srv.ctl("-s", "reload")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert f"{srv.conf}:{line}:" in r.stderr, r.stderr
        assert old.cmd("still old") == "+OK echo: still old"
        with LineClient.connect(port) as c:
            assert c.greeting == GREETING
            assert c.cmd("new one") == "+OK echo: new one"
            c.quit()

        # 2. a bad TLS mode
        srv.configure([Listener(port, tls="sometimes")])
        line = srv.line_of("TLS sometimes")
        r = srv.ctl("-s", "reload")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert f"{srv.conf}:{line}:" in r.stderr, r.stderr
        assert old.cmd("still old") == "+OK echo: still old"
        with LineClient.connect(port) as c:
            assert c.greeting == GREETING
            c.quit()
        # the running configuration is the old one (status reads the file for StateDir: restore it first)
        srv.configure(good)
        st = srv.status()
        assert [l["tls"] for l in st["listeners"]] == ["off"], st

        # 3. fixed: reloads fine, and takes effect (a second listener appears)
        port2 = free_port()
        srv.configure(good + [Listener(port2)])
        assert_ctl_ok(srv.ctl("-s", "reload"), "reload of the fixed configuration")
        wait_for(lambda: port_accepts(port2), 10, "the listener of the fixed configuration")
        assert old.cmd("survived") == "+OK echo: survived"
        old.quit()
    finally:
        old.close()
    assert srv.alive()


def test_sighup_reloads(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)], copy_modules=True).start()
    old = LineClient.connect(port)
    try:
        swap_module(srv)
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: new_greeting(port) == GREETING_V2, 15, "SIGHUP to load the new module generation")
        assert old.cmd("x") == "+OK echo: x"
        old.quit()
    finally:
        old.close()
    assert srv.alive()


def test_sighup_bad_config_keeps_running(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)]).start()
    srv.configure([Listener(port)], extra_lines=["NoSuchDirective on"])
    srv.proc.send_signal(signal.SIGHUP)
    line = srv.line_of("NoSuchDirective")
    wait_for(lambda: f":{line}:" in srv.stderr_text(), 10, "the SIGHUP reload error in the log")
    assert srv.alive()
    with LineClient.connect(port) as c:
        assert c.greeting == GREETING
        c.quit()


def test_slow_control_client_does_not_hold_accepts(make_server, free_port):
    """The control socket is served on the thread that accepts every connection: a client that sends its
    command a byte at a time is cut off, and new sessions are greeted meanwhile."""
    port = free_port()
    srv = make_server([Listener(port)]).start()
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(str(srv.state / "mailprotod.sock"))
    stop = threading.Event()

    def dribble():
        for ch in "statusstatusstatus":
            if stop.wait(0.5):
                return
            try:
                ctl.send(ch.encode())
            except OSError:
                return
    t = threading.Thread(target=dribble)
    t.start()
    try:
        time.sleep(0.3)   # the dribbling client is connected and sending
        t0 = time.monotonic()
        with LineClient.connect(port) as c:
            assert c.greeting == GREETING
            waited = time.monotonic() - t0
            c.quit()
        assert waited < 3, f"a new session waited {waited:.1f}s for the main thread"
    finally:
        stop.set()
        t.join()
        ctl.close()


def test_reload_cannot_move_state_dir(make_server, free_port):
    """StateDir holds the pid file and the control socket: a reload that moves it is refused, and -s still
    finds the server once the file names the old folder again (also with a quoted StateDir holding '#')."""
    port = free_port()
    srv = make_server([Listener(port)], StateDir='"state#1"').start()
    assert srv.status()["pid"] == srv.pid          # -s reads a quoted StateDir with '#' inside
    srv.configure([Listener(port)], StateDir="elsewhere")
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "StateDir cannot change on a reload" in srv.stderr_text(), 10, "the refusal in the log")
    srv.configure([Listener(port)], StateDir='"state#1"')
    assert srv.status()["pid"] == srv.pid
    with LineClient.connect(port) as c:
        assert c.cmd("still here") == "+OK echo: still here"
        c.quit()


def test_reload_adds_and_removes_listeners(make_server, free_port):
    keep, drop, add = free_port(), free_port(), free_port()
    srv = make_server([Listener(keep), Listener(drop)]).start()
    inode_before = listening_socket_inode(keep)
    assert inode_before is not None
    assert port_refused(add)
    s = LineClient.connect(keep)
    try:
        assert s.cmd("before") == "+OK echo: before"

        srv.configure([Listener(keep), Listener(add)])
        assert_ctl_ok(srv.ctl("-s", "reload"), "reload that adds and removes a listener")
        wait_for(lambda: port_accepts(add), 10, f"the added listener 127.0.0.1:{add} to accept")
        wait_for(lambda: port_refused(drop), 10, f"the removed listener 127.0.0.1:{drop} to close")

        with LineClient.connect(add) as c:
            assert c.greeting == GREETING
            assert c.cmd("new port") == "+OK echo: new port"
            c.quit()
        # the untouched listener kept its socket and its session
        assert listening_socket_inode(keep) == inode_before, "the unchanged listener's socket was replaced"
        assert s.cmd("after") == "+OK echo: after"
        with LineClient.connect(keep) as c:
            assert c.greeting == GREETING
            c.quit()
        assert set(srv.listener_status()) == {f"127.0.0.1:{keep}", f"127.0.0.1:{add}"}
        s.quit()
    finally:
        s.close()


def test_reload_changes_tls_mode(make_server, free_port, tls_ctx):
    port = free_port()
    srv = make_server([Listener(port)]).start()
    old = LineClient.connect(port)
    try:
        srv.configure([Listener(port, tls="implicit")])
        assert_ctl_ok(srv.ctl("-s", "reload"), "reload that turns on implicit TLS")
        with LineClient.connect(port, tls=tls_ctx) as c:
            assert c.greeting == GREETING
            assert c.cmd("now over tls") == "+OK echo: now over tls"
            c.quit()
        assert srv.listener_status()[f"127.0.0.1:{port}"]["tls"] == "implicit"
        assert old.cmd("old plain session") == "+OK echo: old plain session"
        old.quit()
    finally:
        old.close()


def test_reload_rereads_certificate(make_server, free_port, tls_cert):
    port = free_port()
    srv = make_server([Listener(port, tls="implicit")])
    cert, key = srv.dir / "cert.pem", srv.dir / "key.pem"
    shutil.copyfile(tls_cert[0], cert)
    shutil.copyfile(tls_cert[1], key)
    srv.configure([Listener(port, tls="implicit")], TLSCertificateFile="cert.pem", TLSCertificateKeyFile="key.pem")
    srv.start()

    def peer_cert():
        with LineClient.connect(port, tls=client_context(None)) as c:
            der = c.sock.getpeercert(binary_form=True)
            c.quit()
            return der
    first = peer_cert()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}", "-keyout", str(srv.dir / "key2.pem"),
                    "-out", str(srv.dir / "cert2.pem")], check=True, capture_output=True, timeout=60)
    os.replace(srv.dir / "cert2.pem", cert)
    os.replace(srv.dir / "key2.pem", key)
    assert_ctl_ok(srv.ctl("-s", "reload"), "reload after replacing the certificate")
    second = peer_cert()
    assert second != first, "the server still presents the old certificate after reload"
    assert second == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_reload_drops_no_connection(make_server, free_port):
    """Clients connecting all through several reloads are all served (DESIGN: none drops a connection)."""
    port, extra = free_port(), free_port()
    srv = make_server([Listener(port)]).start()
    stop = threading.Event()
    results = {"ok": 0, "errors": []}

    def hammer():
        while not stop.is_set():
            try:
                with LineClient.connect(port) as c:
                    assert c.greeting == GREETING, c.greeting
                    assert c.cmd("ping") == "+OK echo: ping"
                    c.quit()
                results["ok"] += 1
            except BaseException as e:  # noqa: BLE001 - collected
                results["errors"].append(repr(e))

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            # alternate: add a listener, remove it (the hammered one is unchanged all along)
            srv.configure([Listener(port)] + ([Listener(extra)] if i % 2 == 0 else []))
            assert_ctl_ok(srv.ctl("-s", "reload"), f"reload {i}")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert results["errors"] == [], results["errors"][:5]
    assert results["ok"] > 0


def test_reload_port_in_use_keeps_running(make_server, free_port):
    port, busy = free_port(), free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", busy))
    holder.listen(1)
    try:
        srv = make_server([Listener(port)]).start()
        old = LineClient.connect(port)
        srv.configure([Listener(port), Listener(busy)])
        r = srv.ctl("-s", "reload")
        assert r.returncode != 0, ("reload reported success though it cannot listen on the port", r.stdout, r.stderr)
        assert f"127.0.0.1:{busy}" in r.stderr, r.stderr
        assert srv.alive()
        assert old.cmd("x") == "+OK echo: x"
        assert new_greeting(port) == GREETING
        old.quit()
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------------------------
# configuration check (-t)

def test_check_good_config(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port), Listener(free_port(), tls="implicit")])
    r = srv.ctl("-t")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"{srv.conf}: configuration OK" in r.stdout + r.stderr
    assert port_refused(port), "-t must not open listeners"


BAD_CONFIGS = {
    # name: how to break the configuration, and the text of the line(s) the error may name
    "unknown directive": dict(extra_lines=["Frobnicate yes"], needles=["Frobnicate"]),
    "bad tls mode": dict(listen=dict(tls="sometimes"), needles=["TLS sometimes"]),
    "bad number": dict(overrides=dict(MaxErrors="many"), needles=["MaxErrors"]),
    "bad interval": dict(overrides=dict(IdleTimeout="soon"), needles=["IdleTimeout"]),
    "interval over ten years": dict(overrides=dict(IdleTimeout="2562047788h"), needles=["IdleTimeout"]),
    "protocol not loaded": dict(listen=dict(protocol="smtp"), needles=["Protocol smtp", "<Listen"]),
    "module file missing": dict(extra_lines=["LoadModule nothere mod_nothere.so"], needles=["mod_nothere.so"]),
    # named at the TLSCertificateFile line, not at the <Listen> that uses it
    "certificate missing": dict(listen=dict(tls="implicit"), overrides=dict(TLSCertificateFile="nothere.pem"),
                                needles=["TLSCertificateFile"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_bad_config(make_server, free_port, case):
    spec = BAD_CONFIGS[case]
    srv = make_server([Listener(free_port(), **spec.get("listen", {}))], extra_lines=spec.get("extra_lines", ()),
                      **spec.get("overrides", {}))
    lines = [srv.line_of(n) for n in spec["needles"]]
    r = srv.ctl("-t")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert any(f"{srv.conf}:{line}: " in r.stderr for line in lines), \
        f"expected '{srv.conf}:{lines[0]}: message', got: {r.stderr!r}"


def test_check_structural_errors(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)])
    base = srv.config_text
    cases = {
        "missing </Listen>": base.replace("</Listen>", ""),
        "stray </Listen>": base + "</Listen>\n",
        "Listen without Protocol": base.replace("    Protocol echo\n", ""),
        "duplicate address": base + "\n".join(Listener(port).render()) + "\n",
        "unknown block": base + "<Nope>\n</Nope>\n",
    }
    for what, text in cases.items():
        srv.write_config(text)
        r = srv.ctl("-t")
        assert r.returncode == 1, (what, r.returncode, r.stdout, r.stderr)
        assert re.search(re.escape(str(srv.conf)) + r":\d+: \S", r.stderr), (what, r.stderr)


def test_check_missing_file(make_server, free_port, tmp_path):
    srv = make_server([Listener(free_port())])
    missing = tmp_path / "nope.conf"
    r = srv.ctl("-t", conf=missing)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert str(missing) in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------------------
# start, stop, pid file, privileges

def test_start_port_in_use_fails(make_server, free_port):
    busy = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", busy))
    holder.listen(1)
    try:
        srv = make_server([Listener(busy)]).start(wait=False)
        rc = srv.wait_exit(timeout=15)
        assert rc != 0
        assert f"127.0.0.1:{busy}" in srv.stderr_text()
    finally:
        holder.close()


def test_start_bad_config_fails(make_server, free_port):
    srv = make_server([Listener(free_port())], extra_lines=["Frobnicate yes"])
    line = srv.line_of("Frobnicate")
    srv.start(wait=False)
    assert srv.wait_exit(timeout=15) == 1
    assert f"{srv.conf}:{line}: " in srv.stderr_text()


def test_graceful_stop_via_ctl(make_server, free_port):
    port = free_port()
    srv = make_server([Listener(port)]).start()
    with LineClient.connect(port) as c:
        assert c.cmd("hi") == "+OK echo: hi"
        t0 = time.monotonic()
        r = srv.stop()      # also checks that the command returns only after the server exited
        assert_ctl_ok(r, "-s stop")
        assert srv.proc.returncode == 0
        assert time.monotonic() - t0 < 15
        assert c.read_until_eof() == ["-ERR server shutting down"]
    assert port_refused(port)


def test_graceful_stop_via_sigterm(make_server, free_port, tls_ctx):
    port, tport = free_port(), free_port()
    srv = make_server([Listener(port), Listener(tport, tls="implicit")]).start()
    a = LineClient.connect(port)
    b = LineClient.connect(tport, tls=tls_ctx)
    try:
        assert a.cmd("hi") == "+OK echo: hi"
        assert b.cmd("hi") == "+OK echo: hi"
        srv.proc.send_signal(signal.SIGTERM)
        assert a.read_until_eof() == ["-ERR server shutting down"]
        assert b.read_until_eof() == ["-ERR server shutting down"]
        assert srv.wait_exit() == 0
    finally:
        a.close()
        b.close()
    assert port_refused(port)


def test_stop_with_client_not_reading(make_server, free_port):
    """A client that never reads cannot hold the server: it exits 0 within ShutdownTimeout (plus slack)."""
    port = free_port()
    srv = make_server([Listener(port)], ShutdownTimeout="2").start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    blocked = threading.Event()

    def flood():
        sock.settimeout(2.0)
        chunk = b"x\r\n" * 20000
        try:
            for _ in range(2000):
                sock.sendall(chunk)
        except (socket.timeout, OSError):
            pass
        blocked.set()
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        assert blocked.wait(60), "the server kept reading and answering a client that never reads"
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.wait_exit(timeout=15)
        assert rc == 0
        assert time.monotonic() - t0 < 12
    finally:
        sock.close()


def test_pid_file(make_server, free_port):
    srv = make_server([Listener(free_port())]).start()
    pidfile = srv.state / "mailprotod.pid"
    assert pidfile.read_text().strip() == str(srv.pid)
    assert srv.status()["pid"] == srv.pid


def test_ctl_without_server(make_server, free_port):
    srv = make_server([Listener(free_port())])
    r = srv.ctl("-s", "status")
    assert r.returncode != 0, r.stdout


@pytest.fixture
def world_readable_dir():
    d = Path(tempfile.mkdtemp(prefix="mailproto-priv-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_privilege_drop(make_server, free_port, world_readable_dir, tls_cert):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    # the certificate inside the world-readable folder too
    cert = world_readable_dir / "cert.pem"
    key = world_readable_dir / "key.pem"
    shutil.copy2(tls_cert[0], cert)
    shutil.copy2(tls_cert[1], key)
    os.chown(key, nobody.pw_uid, -1)   # a reload after the switch reads it as nobody
    port, tport = free_port(), free_port()
    srv = make_server([Listener(port), Listener(tport, tls="implicit")], workdir=world_readable_dir / "srv",
                      User="nobody", TLSCertificateFile=str(cert), TLSCertificateKeyFile=str(key))
    os.chmod(srv.dir, 0o755)
    os.chmod(srv.state, 0o755)
    srv.start()

    def uid_line():
        with open(f"/proc/{srv.pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return [int(x) for x in line.split()[1:]]
    uids = wait_for(lambda: all(u == nobody.pw_uid for u in uid_line()) and uid_line(), 10,
                    "the server's Uid line to show nobody")
    assert uids == [nobody.pw_uid] * 4
    with open(f"/proc/{srv.pid}/status") as f:
        st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert [int(x) for x in st["Gid"].split()] == [nobody.pw_gid] * 4, f"Gid: {st['Gid']}"
    assert "0" not in st.get("Groups", "").split(), f"still in group root: Groups: {st.get('Groups')}"
    with LineClient.connect(port) as c:
        assert c.cmd("as nobody") == "+OK echo: as nobody"
        c.quit()
    with LineClient.connect(tport, tls=client_context(cert)) as c:
        assert c.cmd("tls as nobody") == "+OK echo: tls as nobody"
        c.quit()
    assert srv.status()["pid"] == srv.pid
    # a reload as nobody copies its modules into the folder root made for it, not into root's StateDir
    assert_ctl_ok(srv.ctl("-s", "reload"), "-s reload of the unprivileged server")
    with LineClient.connect(port) as c:
        assert c.cmd("after reload") == "+OK echo: after reload"
        c.quit()
    assert_ctl_ok(srv.stop(), "-s stop of the unprivileged server")
    assert srv.proc.returncode == 0
    assert os.stat(srv.state).st_uid == 0, "StateDir must stay root's (its pid file is written by root)"
    assert os.stat(srv.state / f"modules.{nobody.pw_uid}").st_uid == nobody.pw_uid
    # and root starts it again
    srv.proc = None   # the first server has exited (returncode checked above)
    srv.start()
    with LineClient.connect(port) as c:
        assert c.cmd("second start") == "+OK echo: second start"
        c.quit()
    assert_ctl_ok(srv.stop(), "-s stop after the second start")


def test_idle_timeout_per_listener(make_server, free_port):
    """IdleTimeout inside a <Listen> block overrides the global one for that listener only."""
    short, long_ = free_port(), free_port()
    make_server([Listener(short, directives={"IdleTimeout": "1s"}), Listener(long_)], IdleTimeout="60").start()
    with LineClient.connect(short) as a, LineClient.connect(long_) as b:
        t0 = time.monotonic()
        assert a.read_until_eof(timeout=10) == ["-ERR idle timeout"]
        assert time.monotonic() - t0 < 8
        assert b.cmd("still here") == "+OK echo: still here"
