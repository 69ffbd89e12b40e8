"""The embedding API (include/mailproto/embed.h) driven by a small APR server of our own
(tests/tools/embed_server.c): it owns the listening socket and hands each connection to mailproto."""
import signal
import subprocess
import time

import pytest

from conftest import BUILD, ECHO_SO, SERVER_NAME, LineClient, port_accepts, wait_for

EMBED_SERVER = BUILD / "tests" / "embed_server"


@pytest.fixture
def embed(tmp_path, tls_cert, free_port):
    procs = []

    def start(tls="off", endpoint="127.0.0.1:7000", **extra):
        if not EMBED_SERVER.exists():
            pytest.fail(f"not built: {EMBED_SERVER}")
        port = free_port()
        conf = tmp_path / f"embed{len(procs)}.conf"
        lines = [f"ServerName {SERVER_NAME}", f"ModuleDir {ECHO_SO.parent}", "LoadModule echo mod_echo.so",
                 f"TLSCertificateFile {tls_cert[0]}", f"TLSCertificateKeyFile {tls_cert[1]}", "LogLevel debug"]
        lines += [f"{k} {v}" for k, v in extra.items()]
        lines += [f"<Listen {endpoint}>", "    Protocol echo", f"    TLS {tls}", "</Listen>"]
        conf.write_text("\n".join(lines) + "\n")
        log = open(tmp_path / f"embed{len(procs)}.log", "wb")
        p = subprocess.Popen([str(EMBED_SERVER), str(conf), endpoint, str(port)], stderr=log,
                             stdin=subprocess.DEVNULL)
        procs.append((p, tmp_path / f"embed{len(procs)}.log"))
        wait_for(lambda: port_accepts(port) or p.poll() is not None, 20, "embed_server to listen")
        assert p.poll() is None, (tmp_path / f"embed{len(procs) - 1}.log").read_text()
        return p, port

    yield start
    for p, log in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        text = log.read_text(errors="replace")
        assert "Sanitizer" not in text and "runtime error" not in text, text


def test_embedded_session_plain(embed):
    _, port = embed()
    with LineClient.connect(port) as c:
        assert c.greeting == "+OK echo ready"
        assert c.cmd("hello embedded") == "+OK echo: hello embedded"
        c.send("QUIT\r\n")
        assert c.read_until_eof() == ["+OK bye"]


def test_embedded_starttls_discards_injected_command(embed, tls_ctx):
    _, port = embed(tls="starttls")
    with LineClient.connect(port) as c:
        c.send("STARTTLS\r\nINJECTED\r\n")
        assert c.readline() == "+OK begin TLS"
        c.starttls(tls_ctx)
        assert c.cmd("after") == "+OK echo: after"
        c.send("QUIT\r\n")
        rest = c.read_until_eof()
        assert rest == ["+OK bye"]


def test_embedded_implicit_tls(embed, tls_ctx):
    _, port = embed(tls="implicit")
    with LineClient.connect(port, tls=tls_ctx) as c:
        assert c.greeting == "+OK echo ready"
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert c.cmd("secret") == "+OK echo: secret"


def test_embedded_limits_apply(embed):
    _, port = embed(IdleTimeout="1s")
    with LineClient.connect(port) as c:
        t0 = time.monotonic()
        assert c.read_until_eof(timeout=10) == ["-ERR idle timeout"]
        assert 0.8 < time.monotonic() - t0 < 8


def test_embedded_sessions_in_parallel(embed):
    _, port = embed()
    clients = [LineClient.connect(port) for _ in range(20)]
    try:
        for i, c in enumerate(clients):
            assert c.cmd(f"client {i}") == f"+OK echo: client {i}"
    finally:
        for c in clients:
            c.close()


def test_embedding_server_stop_says_goodbye(embed):
    p, port = embed()
    with LineClient.connect(port) as c:
        assert c.cmd("x") == "+OK echo: x"
        p.send_signal(signal.SIGTERM)
        assert c.read_until_eof(timeout=15) == ["-ERR server shutting down"]
    assert p.wait(timeout=30) == 0
