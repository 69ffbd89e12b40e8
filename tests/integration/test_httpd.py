"""The same handler .so files inside Apache httpd 2.4 (Debian's apache2, event MPM), through
mod_mailproto: one httpd serves a web page and mail protocols on different ports at once."""
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conftest import BUILD, ECHO_SO, SERVER_NAME, LineClient, Listener, port_accepts, wait_for

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
HTTPD_MODULES = Path("/usr/lib/apache2/modules")
MOD_MAILPROTO = BUILD / "modules" / "mod_mailproto.so"
RUN_USER = "www-data"


def sanitized_build():
    cache = BUILD / "CMakeCache.txt"
    return cache.exists() and "MAILPROTO_SANITIZE:BOOL=ON" in cache.read_text()


def httpd_env():
    """httpd itself is not built with the sanitizers: their runtimes must be loaded first for our
    instrumented module; httpd's own exit-time allocations are not ours to report."""
    env = dict(os.environ)
    if sanitized_build():
        libs = [subprocess.run(["cc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
                for lib in ("libasan.so", "libubsan.so")]
        env["LD_PRELOAD"] = " ".join(libs)
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


class Httpd:
    """One httpd in its own ServerRoot (world-readable: its children run as www-data)."""

    def __init__(self, cert, key, free_port):
        self.root = Path(tempfile.mkdtemp(prefix="mp-httpd-"))
        os.chmod(self.root, 0o755)
        (self.root / "logs").mkdir()
        (self.root / "htdocs").mkdir()
        (self.root / "htdocs" / "index.html").write_text("hello from httpd\n")
        shutil.copy(cert, self.root / "cert.pem")
        shutil.copy(key, self.root / "key.pem")
        os.chmod(self.root / "key.pem", 0o644)  # a test key, readable by the children
        self.http_port, self.echo_port, self.tls_port = free_port(), free_port(), free_port()
        self.conf = self.root / "httpd.conf"
        self.proc = None

    def write(self, mail_vhosts=None, extra=""):
        if mail_vhosts is None:
            mail_vhosts = f"""
<VirtualHost 127.0.0.1:{self.echo_port}>
    MailprotoProtocol echo
    MailprotoTLS      starttls
</VirtualHost>
<VirtualHost 127.0.0.1:{self.tls_port}>
    MailprotoProtocol echo
    MailprotoTLS      implicit
</VirtualHost>
"""
        self.conf.write_text(f"""
ServerRoot {self.root}
PidFile {self.root}/httpd.pid
ErrorLog {self.root}/logs/error.log
LogLevel info
ServerName localhost
User {RUN_USER}
Group {RUN_USER}
LoadModule mpm_event_module {HTTPD_MODULES}/mod_mpm_event.so
LoadModule authz_core_module {HTTPD_MODULES}/mod_authz_core.so
LoadModule dir_module {HTTPD_MODULES}/mod_dir.so
LoadModule mime_module {HTTPD_MODULES}/mod_mime.so
LoadModule mailproto_module {MOD_MAILPROTO}
TypesConfig /etc/mime.types
DocumentRoot {self.root}/htdocs
DirectoryIndex index.html
<Directory {self.root}/htdocs>
    Require all granted
</Directory>
Listen 127.0.0.1:{self.http_port}
# A name other than http/https: no accept filter waits for the client to speak first.
Listen 127.0.0.1:{self.echo_port} echo
Listen 127.0.0.1:{self.tls_port} echo
MailprotoServerName {SERVER_NAME}
MailprotoLoad echo {ECHO_SO}
MailprotoTLSCertificateFile {self.root}/cert.pem
MailprotoTLSCertificateKeyFile {self.root}/key.pem
MailprotoLogLevel info
{extra}
{mail_vhosts}
""")

    def ctl(self, *args, check=True):
        return subprocess.run([APACHE, "-f", str(self.conf), *args], capture_output=True, text=True, timeout=60,
                              check=check, env=httpd_env())

    def start(self):
        r = self.ctl("-k", "start", check=False)
        assert r.returncode == 0, r.stderr + self.log()
        wait_for(lambda: port_accepts(self.http_port) and port_accepts(self.tls_port)
                 and port_accepts(self.echo_port), 30, "httpd to listen")

    def log(self):
        p = self.root / "logs" / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def pid(self):
        return int((self.root / "httpd.pid").read_text())

    def stop(self):
        if (self.root / "httpd.pid").exists():
            self.ctl("-k", "stop", check=False)
            try:
                wait_for(lambda: not (self.root / "httpd.pid").exists(), 30, "httpd to stop")
            except AssertionError:
                subprocess.run(["pkill", "-KILL", "-f", str(self.conf)])
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def httpd(tls_cert, free_port):
    if not os.path.exists(APACHE) or not MOD_MAILPROTO.exists():
        pytest.fail(f"needs Debian's apache2 and {MOD_MAILPROTO} (apache2-dev at build time)")
    try:
        pwd.getpwnam(RUN_USER)
    except KeyError:
        pytest.fail(f"no user {RUN_USER}")
    h = Httpd(tls_cert[0], tls_cert[1], free_port)
    yield h
    log = h.log()
    h.stop()
    assert "Sanitizer" not in log and "runtime error" not in log, log


def test_web_and_mail_from_one_httpd(httpd, tls_ctx):
    httpd.write()
    httpd.start()
    with LineClient.connect(httpd.echo_port) as c:
        assert c.greeting == "+OK echo ready"
        # HTTP on another port of the same httpd, while the mail session is open.
        body = urllib.request.urlopen(f"http://127.0.0.1:{httpd.http_port}/", timeout=10).read()
        assert body == b"hello from httpd\n"
        assert c.cmd("mail and web") == "+OK echo: mail and web"
    with LineClient.connect(httpd.tls_port, tls=tls_ctx) as c:
        assert c.greeting == "+OK echo ready"
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        c.send("QUIT\r\n")
        assert c.read_until_eof() == ["+OK bye"]


def test_starttls_inside_httpd_discards_injection(httpd, tls_ctx):
    httpd.write()
    httpd.start()
    with LineClient.connect(httpd.echo_port) as c:
        c.send("STARTTLS\r\nINJECTED\r\n")
        assert c.readline() == "+OK begin TLS"
        c.starttls(tls_ctx)
        assert c.cmd("after") == "+OK echo: after"
        c.send("QUIT\r\n")
        assert c.read_until_eof() == ["+OK bye"]


def test_session_survives_graceful_restart(httpd):
    httpd.write()
    httpd.start()
    with LineClient.connect(httpd.echo_port) as c:
        assert c.cmd("before") == "+OK echo: before"
        loads = httpd.log().count("module echo generation 1 loaded")
        httpd.ctl("-k", "graceful")
        # The restarted parent checks the configuration again and new children load the handler again.
        wait_for(lambda: httpd.log().count("module echo generation 1 loaded") > loads + 1, 30,
                 "new children after the graceful restart")
        with LineClient.connect(httpd.echo_port) as n:
            assert n.greeting == "+OK echo ready"
        assert c.cmd("after graceful") == "+OK echo: after graceful"
        c.send("QUIT\r\n")
        assert c.read_until_eof() == ["+OK bye"]


def test_one_handler_file_for_mailprotod_and_httpd(httpd, make_server, free_port):
    httpd.write()
    httpd.start()
    port = free_port()
    srv = make_server([Listener(port)]).start()
    # Both load build/modules/mod_echo.so itself: mailprotod's status and httpd's log name the same file.
    assert srv.modules()[1]["file"] == str(ECHO_SO)
    assert f"loaded from {ECHO_SO}" in httpd.log()
    with LineClient.connect(port) as a, LineClient.connect(httpd.echo_port) as b:
        assert a.cmd("same") == b.cmd("same") == "+OK echo: same"


def test_bad_mail_configuration_stops_httpd_start(httpd):
    httpd.write(extra="MailprotoDirective NoSuchDirective 1")
    r = httpd.ctl("-k", "start", check=False)
    log = httpd.log()
    assert r.returncode != 0 or "unknown directive 'NoSuchDirective'" in log, (r.stderr, log)
    assert "unknown directive 'NoSuchDirective'" in log + r.stderr
    assert not port_accepts(httpd.echo_port)
