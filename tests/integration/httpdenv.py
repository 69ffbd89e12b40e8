"""Apache httpd (Debian's apache2, event MPM) with mod_mailproto, in a ServerRoot of its own, for the tests
that run mailproto's handlers inside httpd. Its children run as www-data: the ServerRoot, certificate,
users file and mail store are made readable (the store writable) by that user."""
import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BUILD, SERVER_NAME, port_accepts, wait_for

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
HTTPD_MODULES = Path("/usr/lib/apache2/modules")
MOD_MAILPROTO = BUILD / "modules" / "mod_mailproto.so"
RUN_USER = "www-data"
_staged = []


def reachable_by_run_user(path):
    """Can httpd's children (RUN_USER) read `path`? Every folder on the way must let them through."""
    pw = pwd.getpwnam(RUN_USER)
    p = Path(path).resolve()
    for d in [*reversed(p.parents), p]:
        st = d.stat()
        bit = 0o100 if st.st_uid == pw.pw_uid else 0o010 if st.st_gid == pw.pw_gid else 0o001
        if d != p and not st.st_mode & bit:
            return False
    return True


def modules_dir():
    """build/modules, or, when httpd's children cannot reach the build (a checkout under a closed folder,
    as CI's may be), one world-readable copy of it for the whole test run."""
    src = BUILD / "modules"
    if reachable_by_run_user(src):
        return src
    if not _staged:
        d = Path(tempfile.mkdtemp(prefix="mp-httpd-modules-", dir="/var/tmp"))
        os.chmod(d, 0o755)
        for so in src.glob("*.so"):
            shutil.copy2(so, d / so.name)
            os.chmod(d / so.name, 0o755)
        _staged.append(d)
        atexit.register(shutil.rmtree, d, True)
    return _staged[0]


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


def require_httpd():
    if not os.path.exists(APACHE) or not MOD_MAILPROTO.exists():
        pytest.fail(f"needs Debian's apache2 and {MOD_MAILPROTO} (apache2-dev at build time)")
    try:
        pwd.getpwnam(RUN_USER)
    except KeyError:
        pytest.fail(f"no user {RUN_USER}")


class Httpd:
    """One httpd. `dir` and `stderr_text()` make it usable where tests expect a mailprotod Server."""

    def __init__(self, cert, key, free_port):
        require_httpd()
        self.dir = self.root = Path(tempfile.mkdtemp(prefix="mp-httpd-"))
        os.chmod(self.root, 0o755)
        (self.root / "logs").mkdir()
        (self.root / "htdocs").mkdir()
        (self.root / "htdocs" / "index.html").write_text("hello from httpd\n")
        shutil.copy(cert, self.root / "cert.pem")
        shutil.copy(key, self.root / "key.pem")
        os.chmod(self.root / "key.pem", 0o644)  # a test key, readable by the children
        self.http_port = free_port()
        self.conf = self.root / "httpd.conf"
        self.ports = []

    def write(self, mail_globals, vhosts, extra=""):
        """mail_globals: Mailproto* lines; vhosts: (port, [directive lines]) pairs."""
        self.ports = [p for p, _ in vhosts]
        listens = "\n".join(f"Listen 127.0.0.1:{p} mail" for p in self.ports)
        blocks = "\n".join(f"<VirtualHost 127.0.0.1:{p}>\n" + "\n".join(f"    {l}" for l in lines) +
                           "\n</VirtualHost>" for p, lines in vhosts)
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
LoadModule mailproto_module {modules_dir() / "mod_mailproto.so"}
TypesConfig /etc/mime.types
DocumentRoot {self.root}/htdocs
DirectoryIndex index.html
<Directory {self.root}/htdocs>
    Require all granted
</Directory>
Listen 127.0.0.1:{self.http_port}
# A protocol name other than http/https: no accept filter waits for the client to speak first.
{listens}
MailprotoServerName {SERVER_NAME}
MailprotoTLSCertificateFile {self.root}/cert.pem
MailprotoTLSCertificateKeyFile {self.root}/key.pem
MailprotoLogLevel info
{chr(10).join(mail_globals)}
{extra}
{blocks}
""")

    def give_to_run_user(self, path):
        """Makes `path` (a folder tree or a file) the children's."""
        pw = pwd.getpwnam(RUN_USER)
        path = Path(path)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)

    def ctl(self, *args, check=True):
        return subprocess.run([APACHE, "-f", str(self.conf), *args], capture_output=True, text=True, timeout=60,
                              check=check, env=httpd_env())

    def start(self):
        r = self.ctl("-k", "start", check=False)
        assert r.returncode == 0, r.stderr + self.log()
        wait_for(lambda: all(port_accepts(p) for p in [self.http_port] + self.ports), 30, "httpd to listen")
        return self

    def log(self):
        p = self.root / "logs" / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""

    stderr_text = log

    def stop(self):
        if (self.root / "httpd.pid").exists():
            self.ctl("-k", "stop", check=False)
            try:
                wait_for(lambda: not (self.root / "httpd.pid").exists(), 30, "httpd to stop")
            except AssertionError:
                subprocess.run(["pkill", "-KILL", "-f", str(self.conf)])
        log = self.log()
        shutil.rmtree(self.root, ignore_errors=True)
        assert "Sanitizer" not in log and "runtime error" not in log, log
        # a child that hangs at exit (mod_mailproto's cleanup) is killed by the parent, which logs it
        assert "did not exit" not in log and "SIGKILL" not in log, log
