"""
Integration test helpers for mailprotod: a real server process driven by real clients.

Run:  /usr/bin/python3 -m pytest -q tests/integration
The build directory is $MAILPROTO_BUILD, default <repo>/build (it must hold mailprotod, modules/mod_echo.so
and tests/echo_v2/mod_echo.so).

Everything that waits does so with a deadline loop; every socket has a timeout. A failing test shows the
server's stderr (section "mailprotod stderr" in the report).
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MAILPROTO_BUILD", REPO / "build")).resolve()
MAILPROTOD = BUILD / "mailprotod"
ECHO_SO = BUILD / "modules" / "mod_echo.so"
ECHO_V2_SO = BUILD / "tests" / "echo_v2" / "mod_echo.so"

SERVER_NAME = "mail.example.test"
# Bounds, generous for a noisy 2-core machine; nothing waits for them unless something is wrong.
IO_TIMEOUT = 10.0        # one socket read or write
START_TIMEOUT = 20.0     # server start until every port accepts
CTL_TIMEOUT = 30.0       # one `mailprotod -s ...` / `-t` run
STOP_TIMEOUT = 20.0      # graceful stop until the process is gone
POLL_INTERVAL = 0.05
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


def wait_for(predicate, timeout, what, interval=POLL_INTERVAL):
    """Polls predicate() until it returns a true value (returned) or the deadline passes (AssertionError).
    Exceptions from predicate count as "not yet"; the last one is reported."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------
# ports

_handed_out_ports = set()


def _free_port(family=socket.AF_INET, host="127.0.0.1"):
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("no free port")


@pytest.fixture
def free_port():
    """free_port() -> a TCP port free on 127.0.0.1 (never the same twice in a test session)."""
    return _free_port


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def port_accepts(port, host="127.0.0.1", timeout=2.0):
    """True when a TCP connection to host:port succeeds (closed at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            return True
        except (ConnectionRefusedError, socket.timeout, OSError):
            return False


def port_refused(port, host="127.0.0.1", timeout=2.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            return False
        except ConnectionRefusedError:
            return True


def listening_socket_inode(port):
    """The inode of the socket LISTENing on TCP port `port` (IPv4 or IPv6), from /proc/net/tcp*, or None."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    cols = row.split()
                    local, state, inode = cols[1], cols[3], cols[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return int(inode)
        except FileNotFoundError:
            pass
    return None


# ---------------------------------------------------------------------------------------------------------
# TLS material

@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """(cert_path, key_path): a self-signed EC certificate for mail.example.test, made once per session."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={SERVER_NAME}", "-addext", f"subjectAltName=DNS:{SERVER_NAME}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


def client_context(cert=None):
    """A client SSLContext: verifies the server against `cert` when given, else verifies nothing."""
    if cert is not None:
        ctx = ssl.create_default_context(cafile=str(cert))
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def tls_ctx(tls_cert):
    return client_context(tls_cert[0])


# ---------------------------------------------------------------------------------------------------------
# line client

def _short(lines, n=5, width=80):
    """The last n lines, each cut to width characters, for failure messages."""
    return [l if len(l) <= width else l[:width] + f"...({len(l)} chars)" for l in lines[-n:]]


class LineClient:
    """A line-oriented client over a plain or TLS socket. Every read has a deadline."""

    def __init__(self, sock, timeout=IO_TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.lines = []   # every line received (decoded, without the line end), for diagnostics
        self.greeting = None

    @classmethod
    def connect(cls, port, host="127.0.0.1", tls=None, server_hostname=SERVER_NAME, source=None,
                timeout=IO_TIMEOUT, greeting=True):
        """Connects (TLS from the first byte when `tls` is an SSLContext) and, with greeting=True, reads
        the greeting line into .greeting."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            if source:
                sock.bind((source, 0))
            sock.connect((host, port))
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
        c = cls(sock, timeout)
        if greeting:
            c.greeting = c.readline()
        return c

    # -- reading

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("read timed out")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""

    def readline_raw(self, timeout=None):
        """The next line as bytes, with its line end. EOFError at end of stream."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            try:
                data = self._recv(deadline)
            except socket.timeout:
                raise socket.timeout(f"no complete line within the timeout; partial {self.buf[:200]!r}; "
                                     f"lines so far {_short(self.lines)}") from None
            if not data:
                raise EOFError(f"connection closed; partial {self.buf[:200]!r}; lines so far {_short(self.lines)}")
            self.buf += data
        i = self.buf.index(b"\n") + 1
        raw, self.buf = self.buf[:i], self.buf[i:]
        self.lines.append(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
        return raw

    def readline(self, timeout=None):
        """The next line as str without its line end."""
        return self.readline_raw(timeout).rstrip(b"\r\n").decode("utf-8", "replace")

    def read_until_eof(self, timeout=None):
        """Every remaining line (and a last partial one) until the server closes; socket.timeout if it
        does not close in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = []
        while True:
            while b"\n" in self.buf:
                i = self.buf.index(b"\n") + 1
                line = self.buf[:i].rstrip(b"\r\n").decode("utf-8", "replace")
                self.buf = self.buf[i:]
                self.lines.append(line)
                out.append(line)
            try:
                data = self._recv(deadline)
            except socket.timeout:
                raise socket.timeout(f"server did not close the connection; got {_short(out, 20)} "
                                     f"partial {self.buf[:200]!r}") from None
            if not data:
                if self.buf:
                    out.append(self.buf.decode("utf-8", "replace"))
                    self.lines.append(out[-1])
                    self.buf = b""
                return out
            self.buf += data

    def at_eof(self, timeout=None):
        """True when the next read is end of stream (no data first)."""
        return self.read_until_eof(timeout) == []

    # -- writing

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def cmd(self, line, timeout=None):
        """Sends one line (CRLF added) and returns the next reply line."""
        self.send(line + "\r\n")
        return self.readline(timeout)

    def quit(self):
        """QUIT, expect '+OK bye', then the server's close."""
        assert self.cmd("QUIT") == "+OK bye"
        rest = self.read_until_eof()
        assert rest == [], f"data after +OK bye: {rest}"
        self.close()

    # -- TLS

    def starttls(self, ctx, server_hostname=SERVER_NAME):
        """Handshakes over the existing connection (after the server's go-ahead)."""
        assert self.buf == b"", f"unread bytes before the TLS handshake: {self.buf!r}"
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)

    def raw_pending(self, wait):
        """Bytes the server sends within `wait` seconds (for checking that nothing comes); does not block
        longer than `wait`."""
        import select
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return b""
        self.sock.settimeout(1.0)
        try:
            return self.sock.recv(65536, socket.MSG_PEEK)
        except (socket.timeout, OSError):
            return b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------------------
# server

@dataclass
class Listener:
    port: int
    tls: str = "off"
    protocol: str = "echo"
    host: str = "127.0.0.1"
    directives: dict = field(default_factory=dict)   # extra lines inside the block

    @property
    def address(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def render(self):
        lines = [f"<Listen {self.address}>", f"    Protocol {self.protocol}", f"    TLS {self.tls}"]
        lines += [f"    {k} {v}" for k, v in self.directives.items()]
        lines.append("</Listen>")
        return lines


_running_servers = []   # servers of the current test, for the failure report


class Server:
    """One mailprotod in its own folder: config, state dir, stderr log."""

    def __init__(self, workdir, cert, key, copy_modules=False):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mailprotod.conf"
        self.state = self.dir / "state"
        self.state.mkdir(exist_ok=True)
        self.stderr_path = self.dir / "mailprotod.stderr"
        self.stdout_path = self.dir / "mailprotod.stdout"
        self.cert, self.key = Path(cert), Path(key)
        self.copy_modules = copy_modules
        if copy_modules:
            # A private module folder the test may modify (never build/).
            self.module_dir = self.dir / "modules"
            self.module_dir.mkdir(exist_ok=True)
            shutil.copy2(ECHO_SO, self.module_dir / "mod_echo.so")
        else:
            self.module_dir = ECHO_SO.parent
        self.proc = None
        self.listeners = []
        self.config_text = ""
        self._stderr_file = None
        _running_servers.append(self)

    # -- configuration

    def default_globals(self):
        return {
            "ServerName": SERVER_NAME,
            "ModuleDir": str(self.module_dir),
            "LoadModule": "echo mod_echo.so",
            "StateDir": "state",
            "LogLevel": "debug",
            "TLSCertificateFile": str(self.cert),
            "TLSCertificateKeyFile": str(self.key),
            "IdleTimeout": "60",
            "MaxLineLength": "8192",
            "MaxErrors": "10",
            "MaxConnections": "1000",
            "MaxConnectionsPerClient": "50",
            "ShutdownTimeout": "5",
        }

    def configure(self, listeners, extra_lines=(), **overrides):
        """Writes the configuration: defaults, overrides (value None drops a directive), extra raw lines
        (global scope, after the defaults), then the <Listen> blocks. Returns the text."""
        g = self.default_globals()
        for k, v in overrides.items():
            if v is None:
                g.pop(k, None)
            else:
                g[k] = v
        lines = ["# written by tests/integration"]
        lines += [f"{k:<24} {v}" for k, v in g.items()]
        lines += list(extra_lines)
        for l in listeners:
            lines += l.render()
        self.listeners = list(listeners)
        return self.write_config("\n".join(lines) + "\n")

    def write_config(self, text):
        # Written to a temp name and renamed, as an editor or admin tool would.
        tmp = self.conf.with_name(self.conf.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.conf)
        self.config_text = text
        return text

    def line_of(self, needle):
        """1-based line number of the first line of the current config containing `needle`."""
        for i, line in enumerate(self.config_text.splitlines(), 1):
            if needle in line:
                return i
        raise KeyError(needle)

    # -- process

    def start(self, wait=True):
        assert self.proc is None
        self._stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([str(MAILPROTOD), "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=open(self.stdout_path, "ab"), stderr=self._stderr_file,
                                     cwd=str(self.dir))
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=START_TIMEOUT):
        """Until every configured port accepts a connection; fails at once if the server exits."""
        deadline = time.monotonic() + timeout
        pending = list(self.listeners)
        while pending:
            if not self.alive():
                raise AssertionError(f"mailprotod exited with {self.proc.returncode} during start-up:\n"
                                     f"{self.stderr_text()}")
            l = pending[0]
            if self._probe(l):
                pending.pop(0)
                continue
            if time.monotonic() >= deadline:
                raise AssertionError(f"mailprotod did not open {l.address} within {timeout}s:\n"
                                     f"{self.stderr_text()}")
            time.sleep(POLL_INTERVAL)

    def _probe(self, l):
        """One connection to listener l; a polite session (greeting, QUIT, wait for the close) so that it
        is gone from the server's counts when the test begins. False when the port refuses."""
        family = socket.AF_INET6 if ":" in l.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect((l.host, l.port))
        except OSError:
            sock.close()
            return False
        try:
            if l.tls == "implicit":
                sock = client_context(None).wrap_socket(sock, server_hostname=SERVER_NAME)
            c = LineClient(sock, timeout=5.0)
            c.readline()
            c.send("QUIT\r\n")
            c.read_until_eof()
        except Exception:  # noqa: BLE001 - the port accepts; the tests judge the rest
            pass
        finally:
            sock.close()
        return True

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ctl(self, *args, timeout=CTL_TIMEOUT, conf=None):
        """Runs `mailprotod -c CONF ARGS...`; returns the CompletedProcess (text)."""
        return subprocess.run([str(MAILPROTOD), "-c", str(conf or self.conf), *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=str(self.dir))

    def status(self):
        r = self.ctl("-s", "status")
        assert r.returncode == 0, f"-s status exited {r.returncode}: stdout={r.stdout!r} stderr={r.stderr!r}"
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"-s status printed no JSON ({e}): {r.stdout!r}") from None

    def modules(self, name="echo"):
        """{generation: entry} of the status' modules named `name`."""
        return {m["generation"]: m for m in self.status()["modules"] if m["name"] == name}

    def listener_status(self):
        return {l["address"]: l for l in self.status()["listeners"]}

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mailprotod (pid {self.proc.pid}) still running after {timeout}s") from None

    def stop(self, timeout=STOP_TIMEOUT):
        """`-s stop` (graceful). The server is reaped while the command runs (a command that waits for the
        process to be gone must not wait for a zombie). Returns the command's CompletedProcess once both
        have ended; AssertionError if the command returned while the server kept running, or on timeout."""
        ctl = subprocess.Popen([str(MAILPROTOD), "-c", str(self.conf), "-s", "stop"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        try:
            while True:
                srv_rc = self.proc.poll()     # reaps the server as soon as it exits
                ctl_rc = ctl.poll()
                if ctl_rc is not None and srv_rc is None:
                    # the command is done: the server must be gone (a moment for the kernel to say so)
                    try:
                        self.proc.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        raise AssertionError(f"`-s stop` returned (exit {ctl_rc}) while the server still runs") from None
                if ctl_rc is not None and self.proc.poll() is not None:
                    out, err = ctl.communicate(timeout=5)
                    return subprocess.CompletedProcess(ctl.args, ctl_rc, out, err)
                if time.monotonic() >= deadline:
                    raise AssertionError(f"`-s stop` not done after {timeout}s: command "
                                         f"{'running' if ctl_rc is None else 'exited %d' % ctl_rc}, server "
                                         f"{'running' if self.proc.poll() is None else 'exited'}")
                time.sleep(POLL_INTERVAL)
        finally:
            if ctl.poll() is None:
                ctl.kill()
                ctl.wait(timeout=5)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._stderr_file:
            self._stderr_file.close()
            self._stderr_file = None


@pytest.fixture(scope="session")
def build_ok():
    missing = [p for p in (MAILPROTOD, ECHO_SO, ECHO_V2_SO) if not p.exists()]
    if missing:
        pytest.fail(f"not built: {', '.join(map(str, missing))} (cmake -S . -B build && cmake --build build; "
                    f"or set MAILPROTO_BUILD)", pytrace=False)


@pytest.fixture
def make_server(build_ok, tls_cert, tmp_path):
    """make_server(listeners, copy_modules=False, workdir=None, **config) -> a configured, not yet started
    Server. Every server is killed at teardown."""
    servers = []

    def factory(listeners, copy_modules=False, workdir=None, extra_lines=(), **overrides):
        wd = Path(workdir) if workdir else tmp_path / f"srv{len(servers)}"
        srv = Server(wd, tls_cert[0], tls_cert[1], copy_modules=copy_modules)
        srv.configure(listeners, extra_lines=extra_lines, **overrides)
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        srv.kill()
    # A sanitizer build (MAILPROTO_BUILD=build-asan) reports memory errors and leaks on stderr.
    reports = []
    for srv in servers:
        text = srv.stderr_text()
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                reports.append(f"{srv.stderr_path}:\n{text[max(0, i - 200):i + 3000]}")
                break
    if reports:
        pytest.fail("sanitizer report in mailprotod stderr:\n" + "\n\n".join(reports), pytrace=False)


@pytest.fixture(autouse=True)
def _track_servers():
    _running_servers.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for i, srv in enumerate(_running_servers):
            text = srv.stderr_text()
            if len(text) > 20000:
                text = "...\n" + text[-20000:]
            rep.sections.append((f"mailprotod stderr [{i}] {srv.stderr_path}", text or "(empty)"))
