"""
Helpers for the POP3 integration tests: a real mailprotod with mod_pop3 + mod_maildir + mod_passwd (and
mod_smtp when asked), a users file with {PLAIN} entries, Maildir seeding by writing files directly, and a
raw RETR reader that returns exactly the bytes the server meant (dot-stuffing undone, nothing else).

    env = pop3env(tls=("off", "starttls"))          # the fixture: a started server
    env.seed("alice@example.test", b"Subject: x\\r\\n\\r\\nhi\\r\\n")
    with env.client("off") as c: ...                  # a conftest.LineClient after the greeting
"""
import os
import socket
import time
from pathlib import Path

import pytest

from conftest import ECHO_SO, IO_TIMEOUT, SERVER_NAME, LineClient, Listener, client_context, wait_for

MODULES = ECHO_SO.parent
POP3_SO = MODULES / "mod_pop3.so"
MAILDIR_SO = MODULES / "mod_maildir.so"
PASSWD_SO = MODULES / "mod_passwd.so"
SMTP_SO = MODULES / "mod_smtp.so"

USERS = {"alice@example.test": "wonderland", "bob@example.test": "builder"}
ALICE, ALICE_PW = "alice@example.test", "wonderland"
# A user whose name and password are not ASCII (RFC 6856 section 2.2); pass users=UTF8_USERS to the fixture.
JUERGEN, JUERGEN_PW = "j\u00fcrgen@example.test", "p\u00e4ssw\u00f6rd"
UTF8_USERS = dict(USERS, **{JUERGEN: JUERGEN_PW})

# mod_pop3's directives as the tests set them: a login waits this long for a maildrop another session
# holds before [IN-USE] (the default, 10 s, would make every [IN-USE] test wait that long)
MODULE_DEFAULTS = {"POP3LockWait": "300ms"}

_seq = [0]


class Pop3Env:
    def __init__(self, srv, ports, users, backend="mailprotod"):
        self.backend = backend      # "mailprotod", or "httpd" (the same handlers inside Apache httpd)
        self.srv = srv
        self.ports = ports          # {"off": port, "starttls": port, "required": port, "implicit": port, "smtp": port}
        self.users = users
        self.dir = srv.dir

    # -- the Maildir (MailStore maildir:mail/%d/%n)

    def maildir(self, user):
        local, domain = user.split("@", 1)
        return self.dir / "mail" / domain / local

    def seed(self, user, data, name=None):
        """Delivers `data` as a new message the way an MDA does (tmp/, then rename into new/). Returns the
        final path."""
        md = self.maildir(user)
        for sub in ("tmp", "new", "cur"):
            (md / sub).mkdir(parents=True, exist_ok=True)
        if name is None:
            _seq[0] += 1
            name = f"{int(time.time())}.M{_seq[0]}P{os.getpid()}.testhost"
        tmp = md / "tmp" / name
        tmp.write_bytes(data)
        final = md / "new" / name
        os.replace(tmp, final)
        if self.backend == "httpd":
            self.srv.give_to_run_user(self.dir / "mail")
        return final

    def files(self, user):
        """Message files in new/ and cur/ (sorted names without the :2, info)."""
        md = self.maildir(user)
        out = []
        for sub in ("new", "cur"):
            d = md / sub
            if d.is_dir():
                out += [p for p in d.iterdir() if p.is_file()]
        return sorted(out, key=lambda p: p.name)

    def file_bytes(self, user, base):
        """The bytes of the message file whose name starts with `base`, as CRLF."""
        for p in self.files(user):
            if p.name.split(":", 1)[0] == base:
                return crlf(p.read_bytes())
        raise FileNotFoundError(base)

    # -- clients

    def port(self, tls="off"):
        return self.ports[tls]

    def client(self, tls="off", ctx=None):
        """A LineClient connected (TLS from the first byte on the implicit listener) after the greeting."""
        if tls == "implicit":
            return LineClient.connect(self.port(tls), tls=ctx or client_context(None))
        return LineClient.connect(self.port(tls))

    def login(self, tls="off", user=ALICE, password=None):
        c = self.client(tls)
        assert c.greeting.startswith("+OK"), c.greeting
        assert c.cmd(f"USER {user}") == "+OK"
        r = c.cmd(f"PASS {password or self.users[user]}")
        assert r.startswith("+OK Logged in"), r
        return c


def crlf(data):
    """LF or CRLF line ends to CRLF (what a POP3 client receives for a Maildir file)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def read_multiline(c, timeout=None):
    """The body of a multi-line response (after its status line) up to the terminating ".", with the
    dot-stuffing undone (RFC 1939 section 3), as bytes with CRLF line ends exactly as received."""
    out = bytearray()
    while True:
        raw = c.readline_raw(timeout)
        if raw == b".\r\n":
            return bytes(out)
        assert raw.endswith(b"\r\n"), f"line without CRLF: {raw[:80]!r}"
        if raw.startswith(b"."):
            raw = raw[1:]
        out += raw


def retr(c, n, timeout=None):
    status = c.cmd(f"RETR {n}", timeout)
    assert status.startswith("+OK"), status
    return status, read_multiline(c, timeout)


def users_text(users, secrets=None):
    """The users file: {PLAIN} entries, then `secrets` ({user: "{SCHEME}..."}) as they are."""
    return ("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()) +
            "".join(f"{u}:{s}\n" for u, s in (secrets or {}).items()))


def httpd_factory(request, free_port, tls_cert):
    """The same listeners as virtual hosts of Apache httpd with mod_mailproto (issue 6)."""
    from httpdenv import Httpd

    def factory(tls=("off", "starttls", "required", "implicit"), smtp=False, users=USERS, secrets=None, **overrides):
        h = Httpd(tls_cert[0], tls_cert[1], free_port)
        request.addfinalizer(h.stop)
        ports = {mode: free_port() for mode in tls}
        from httpdenv import modules_dir
        mods = modules_dir()
        lines = [f"MailprotoLoad pop3 {mods}/mod_pop3.so"]
        vhosts = [(ports[mode], ["MailprotoProtocol pop3", f"MailprotoTLS {mode}"]) for mode in tls]
        if smtp:
            if not SMTP_SO.exists():
                pytest.skip("mod_smtp.so is not built")
            lines.append(f"MailprotoLoad smtp {mods}/mod_smtp.so")
            ports["smtp"] = free_port()
            vhosts.append((ports["smtp"], ["MailprotoProtocol smtp", "MailprotoTLS off"]))
        lines += [f"MailprotoLoad maildir {mods}/mod_maildir.so", f"MailprotoLoad passwd {mods}/mod_passwd.so",
                  "MailprotoLocalDomains example.test", "MailprotoStore maildir:mail/%d/%n",
                  "MailprotoUserDB passwd-file:users"]
        overrides = dict(MODULE_DEFAULTS, **overrides)
        # a directive of a module has no Mailproto* twin: MailprotoDirective carries it
        lines += [f"MailprotoDirective {k} {v}" if k in MODULE_DEFAULTS else f"Mailproto{k} {v}"
                  for k, v in overrides.items()]
        h.write(lines, vhosts)
        (h.root / "users").write_text(users_text(users, secrets), encoding="utf-8")
        (h.root / "mail").mkdir(exist_ok=True)
        h.give_to_run_user(h.root / "mail")
        h.start()
        return Pop3Env(h, ports, users, backend="httpd")

    return factory


@pytest.fixture(params=["mailprotod", "httpd"])
def pop3env(request, make_server, free_port, tls_cert):
    """pop3env(tls=("off",...), smtp=False, users=USERS, **config) -> a started Pop3Env. Every POP3 test runs
    against mailprotod and against the same handlers inside Apache httpd."""
    for so in (POP3_SO, MAILDIR_SO, PASSWD_SO):
        if not so.exists():
            pytest.fail(f"not built: {so}", pytrace=False)
    if request.param == "httpd":
        return httpd_factory(request, free_port, tls_cert)

    def factory(tls=("off", "starttls", "required", "implicit"), smtp=False, users=USERS, secrets=None, **overrides):
        """secrets: {user: "{SCHEME}..."} lines added to the users file as they are."""
        ports = {mode: free_port() for mode in tls}
        listeners = [Listener(ports[mode], tls=mode, protocol="pop3") for mode in tls]
        # Protocol modules before providers (as in DESIGN's example): the host unloads modules in load order,
        # and a protocol module's cached provider instances must go before the provider code does.
        extra = []
        if smtp:
            if not SMTP_SO.exists():
                pytest.skip("mod_smtp.so is not built")
            extra.append("LoadModule               smtp mod_smtp.so")
            ports["smtp"] = free_port()
            listeners.append(Listener(ports["smtp"], tls="off", protocol="smtp"))
        extra += ["LoadModule               maildir mod_maildir.so", "LoadModule               passwd mod_passwd.so"]
        extra += ["LocalDomains             example.test", "MailStore                maildir:mail/%d/%n",
                  "UserDB                   passwd-file:users"]
        cfg = dict(LoadModule="pop3 mod_pop3.so", **MODULE_DEFAULTS)
        cfg.update(overrides)
        srv = make_server(listeners, extra_lines=extra, **cfg)
        (srv.dir / "users").write_text(users_text(users, secrets), encoding="utf-8")
        (srv.dir / "mail").mkdir(exist_ok=True)
        srv.start()
        return Pop3Env(srv, ports, users)

    return factory
