"""
Helpers for the SMTP/LMTP integration tests: a mailprotod with mod_smtp, mod_lmtp, mod_maildir and
mod_passwd on loopback ports, a users file, and readers of what landed in the Maildirs.

Listeners of one server (see SmtpEnv):
  mx     TLS starttls              the MX role (relay refused, AUTH only after STARTTLS)
  sub    TLS required, Submission  port 587's role
  subs   TLS implicit, Submission  port 465's role
  lmtp   Protocol lmtp             RFC 2033
"""
import email
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import BUILD, IO_TIMEOUT, Listener, LineClient, wait_for

DOMAIN = "example.test"
USERS = {
    "alice@example.test": "wonderland",   # {PLAIN}
    "bob@example.test": "builder",        # {SHA512-CRYPT}
    "carol@example.test": "x",            # {PLAIN}
}
SMTP_SO = BUILD / "modules" / "mod_smtp.so"
LMTP_SO = BUILD / "modules" / "mod_lmtp.so"
MAILDIR_SO = BUILD / "modules" / "mod_maildir.so"
PASSWD_SO = BUILD / "modules" / "mod_passwd.so"


def sha512_crypt(password):
    return subprocess.run(["openssl", "passwd", "-6", password], check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


@dataclass
class SmtpEnv:
    srv: object
    mx: int
    sub: int
    subs: int
    lmtp: int

    @property
    def mail(self):
        return self.srv.dir / "mail"

    def maildir(self, user):
        local, domain = user.split("@")
        return self.mail / domain / local

    def messages(self, user):
        """Every message file of the user's INBOX (new/ and cur/), oldest first, as bytes."""
        d = self.maildir(user)
        files = [p for sub in ("new", "cur") for p in (d / sub).glob("*") if p.is_file()] if d.exists() else []
        files.sort(key=lambda p: p.stat().st_mtime_ns)
        return [p.read_bytes() for p in files]

    def wait_messages(self, user, n, timeout=10):
        return wait_for(lambda: (lambda m: m if len(m) >= n else None)(self.messages(user)), timeout,
                        f"{n} message(s) for {user}")

    def tmp_files(self, user):
        d = self.maildir(user) / "tmp"
        return [p for p in d.glob("*")] if d.exists() else []


def start_smtp_server(make_server, free_port, extra=(), **overrides):
    missing = [p for p in (SMTP_SO, LMTP_SO, MAILDIR_SO, PASSWD_SO) if not p.exists()]
    if missing:
        import pytest
        pytest.fail(f"not built: {', '.join(map(str, missing))}", pytrace=False)
    mx, sub, subs, lmtp = free_port(), free_port(), free_port(), free_port()
    listeners = [
        Listener(mx, tls="starttls", protocol="smtp"),
        Listener(sub, tls="required", protocol="smtp", directives={"Submission": "on"}),
        Listener(subs, tls="implicit", protocol="smtp", directives={"Submission": "on"}),
        Listener(lmtp, tls="off", protocol="lmtp"),
    ]
    lines = ["LoadModule smtp mod_smtp.so", "LoadModule lmtp mod_lmtp.so", "LoadModule maildir mod_maildir.so",
             "LoadModule passwd mod_passwd.so", f"LocalDomains {DOMAIN}", "MailStore maildir:mail/%d/%n",
             "UserDB passwd-file:users", *extra]
    overrides.setdefault("MaxMessageSize", "1M")
    srv = make_server(listeners, extra_lines=lines, **overrides)
    (srv.dir / "users").write_text(
        "alice@example.test:{PLAIN}wonderland\n"
        f"bob@example.test:{{SHA512-CRYPT}}{sha512_crypt('builder')}\n"
        "carol@example.test:{PLAIN}x\n")
    srv.start()
    return SmtpEnv(srv, mx, sub, subs, lmtp)


def split_trace(data):
    """(return_path, received, rest) of a delivered message: our two trace fields, then what was sent."""
    assert data.startswith(b"Return-Path: <"), data[:200]
    nl = data.index(b"\r\n") + 2
    rp, rest = data[:nl], data[nl:]
    assert rest.startswith(b"Received: "), rest[:200]
    i = rest.index(b"\r\n") + 2
    while rest[i:i + 1] == b"\t":
        i = rest.index(b"\r\n", i) + 2
    return rp, rest[:i], rest[i:]


RECEIVED_RE = re.compile(
    rb"^Received: from (?P<helo>\S+) \(\[(?P<ip>[^\]]+)\]\)\r\n"
    rb"\tby mail\.example\.test \(mailproto\) with (?P<with>[A-Z0-9]+) id (?P<id>[A-Za-z0-9]+)"
    rb"(?:\r\n\t\(using (?P<tls>TLSv1\.[23]) with cipher (?P<cipher>\S+) \(\d+ bits\)\))?"
    rb"(?:\r\n\tfor <(?P<for>[^>]+)>)?;\r\n"
    rb"\t(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    rb"\d\d:\d\d:\d\d \+0000\r\n$")


def check_delivered(data, sender, body, with_=None, for_=None, tls=None):
    """The message is Return-Path + Received + exactly `body`; returns the Received match."""
    rp, received, rest = split_trace(data)
    assert rp == b"Return-Path: <" + sender.encode() + b">\r\n"
    m = RECEIVED_RE.match(received)
    assert m, received
    if with_ is not None:
        assert m.group("with").decode() == with_, received
    if for_ is not None:
        assert (m.group("for") or b"").decode() == for_, received
    if tls is not None:
        assert bool(m.group("tls")) == tls, received
    assert rest == body, (rest[:300], body[:300])
    return m


@dataclass
class Dsn:
    """A delivery status notification (RFC 3464 in multipart/report, RFC 6522), parsed with Python's email."""
    msg: object          # the whole message
    text: str            # the human-readable part
    per_message: object  # the per-message fields (an email.message.Message)
    recipients: list     # one Message of per-recipient fields each
    headers: str         # the returned header (text/rfc822-headers)


def parse_dsn(data):
    msg = email.message_from_bytes(data)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    blocks = parts[1].get_payload()
    return Dsn(msg, parts[0].get_payload(), blocks[0], blocks[1:], parts[2].get_payload())


class SmtpClient(LineClient):
    """A raw SMTP client: reads multi-line replies."""

    def reply(self, timeout=None):
        lines = []
        while True:
            line = self.readline(timeout)
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def command(self, line):
        self.send(line + "\r\n")
        return self.reply()


def message(subject="test", body="Hello.\r\n", extra=b""):
    return (f"From: someone\r\nTo: someone\r\nSubject: {subject}\r\n\r\n{body}").encode() + extra


def wait_port_free(port, timeout=10):
    def free():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0
    wait_for(free, timeout, f"port {port} to close")


USERS_FILE = ("alice@example.test:{PLAIN}wonderland\n"
              "bob@example.test:{SHA512-CRYPT}%s\n"
              "carol@example.test:{PLAIN}x\n")


def start_smtp_httpd(tls_cert, free_port, request):
    """The same four roles served by Apache httpd through mod_mailproto (issue 6): the handler files of
    build/modules, configured with httpd's Mailproto* directives."""
    from httpdenv import Httpd
    h = Httpd(tls_cert[0], tls_cert[1], free_port)
    request.addfinalizer(h.stop)
    mx, sub, subs, lmtp = free_port(), free_port(), free_port(), free_port()
    from httpdenv import modules_dir
    mods = modules_dir()
    h.write([f"MailprotoLoad smtp {mods}/mod_smtp.so", f"MailprotoLoad lmtp {mods}/mod_lmtp.so",
             f"MailprotoLoad maildir {mods}/mod_maildir.so", f"MailprotoLoad passwd {mods}/mod_passwd.so",
             f"MailprotoLocalDomains {DOMAIN}", "MailprotoStore maildir:mail/%d/%n",
             "MailprotoUserDB passwd-file:users", "MailprotoMaxMessageSize 1M"],
            [(mx, ["MailprotoProtocol smtp", "MailprotoTLS starttls"]),
             (sub, ["MailprotoProtocol smtp", "MailprotoTLS required", "MailprotoSubmission on"]),
             (subs, ["MailprotoProtocol smtp", "MailprotoTLS implicit", "MailprotoSubmission on"]),
             (lmtp, ["MailprotoProtocol lmtp", "MailprotoTLS off"])])
    (h.root / "users").write_text(USERS_FILE % sha512_crypt("builder"))
    (h.root / "mail").mkdir()
    h.give_to_run_user(h.root / "mail")
    h.start()
    return SmtpEnv(h, mx, sub, subs, lmtp)
