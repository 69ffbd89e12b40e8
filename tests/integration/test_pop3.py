"""
mod_pop3 in the real mailprotod with mod_maildir and mod_passwd, driven by real clients: Python's poplib
(POP3, POP3_SSL, stls(), apop), curl (pop3://, pop3s://), Debian's fetchmail, and raw sockets for what
clients do not exercise (STLS injection, dropped connections, byte-exact RETR).
"""
import base64
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import time

import pytest

from conftest import IO_TIMEOUT, LineClient, client_context, wait_for
from pop3env import (ALICE, ALICE_PW, JUERGEN, JUERGEN_PW, UTF8_USERS, crlf, pop3env, read_multiline,  # noqa: F401
                     retr)

CRLF_MSG = (b"Return-Path: <sender@example.org>\r\nSubject: crlf message\r\nFrom: sender@example.org\r\n"
            b"To: alice@example.test\r\n\r\nfirst line\r\n.a line starting with a dot\r\n..two dots\r\n.\r\n"
            b"last line\r\n")
LF_MSG = (b"Subject: lf message\nFrom: sender@example.org\n\nbody with LF endings\n.\n. dot space\nend\n")
NOEOL_MSG = b"Subject: no final newline\r\n\r\nthe end"


def ctx():
    return client_context(None)


def poplib_login(env, tls="off", user=ALICE, password=ALICE_PW):
    if tls == "implicit":
        p = poplib.POP3_SSL("127.0.0.1", env.port(tls), timeout=IO_TIMEOUT, context=ctx())
    else:
        p = poplib.POP3("127.0.0.1", env.port(tls), timeout=IO_TIMEOUT)
        if tls in ("starttls", "required"):
            p.stls(ctx())
    p.user(user)
    p.pass_(password)
    return p


def poplib_bytes(lines):
    """poplib's retr() lines (dot-stuffing undone, line ends stripped) back to CRLF bytes."""
    return b"".join(l + b"\r\n" for l in lines)


def wait_unlocked(env, user=ALICE, tls="off"):
    """Until a login of `user` is not refused with [IN-USE] (the server noticed a dropped session)."""
    def try_login():
        c = env.client(tls)
        try:
            c.cmd(f"USER {user}")
            r = c.cmd(f"PASS {env.users[user]}")
            if r.startswith("+OK"):
                return c
            assert "[IN-USE]" in r, r
            c.close()
            return None
        except BaseException:
            c.close()
            raise
    return wait_for(try_login, 15, "the maildrop lock to be released")


# ---------------------------------------------------------------------------------------------------------
# poplib

def test_poplib_plain_session(pop3env):
    env = pop3env(tls=("off",))
    f1 = env.seed(ALICE, CRLF_MSG)
    f2 = env.seed(ALICE, LF_MSG)
    f3 = env.seed(ALICE, NOEOL_MSG)

    p = poplib.POP3("127.0.0.1", env.port(), timeout=IO_TIMEOUT)
    welcome = p.getwelcome()
    assert welcome.startswith(b"+OK") and b"<" in welcome and welcome.endswith(b"@mail.example.test>")
    caps = p.capa()
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL", "IMPLEMENTATION"):
        assert cap in caps, caps
    assert "STLS" not in caps
    assert caps["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    p.user(ALICE)
    assert p.pass_(ALICE_PW).startswith(b"+OK Logged in")

    sizes = [len(crlf(CRLF_MSG)), len(crlf(LF_MSG)), len(NOEOL_MSG)]
    assert p.stat() == (3, sum(sizes))
    resp, listing, _ = p.list()
    assert [tuple(map(int, l.split())) for l in listing] == [(1, sizes[0]), (2, sizes[1]), (3, sizes[2])]
    assert p.list(2) == b"+OK 2 %d" % sizes[1]
    _, uidls, _ = p.uidl()
    uids = [l.split()[1] for l in uidls]
    assert uids == [f1.name.encode(), f2.name.encode(), f3.name.encode()]   # the Maildir base names
    assert p.uidl(3) == b"+OK 3 " + uids[2]

    # RETR: the exact size announced, the exact bytes (LF files arrive as CRLF)
    for i, (data, size) in enumerate(zip((CRLF_MSG, LF_MSG, NOEOL_MSG), sizes), 1):
        resp, lines, octets = p.retr(i)
        assert resp == b"+OK %d octets" % size
        want = crlf(data) if data.endswith(b"\n") else data + b"\r\n"
        assert poplib_bytes(lines) == want

    # TOP: headers, blank line, n body lines (dot-stuffing undone by poplib)
    resp, lines, _ = p.top(1, 2)
    assert lines == [b"Return-Path: <sender@example.org>", b"Subject: crlf message", b"From: sender@example.org",
                     b"To: alice@example.test", b"", b"first line", b".a line starting with a dot"]
    resp, lines, _ = p.top(2, 0)
    assert lines == [b"Subject: lf message", b"From: sender@example.org", b""]

    # DELE, RSET, DELE, QUIT: only what is marked at QUIT goes
    p.dele(1)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.retr(1)
    assert p.stat() == (2, sizes[1] + sizes[2])
    p.rset()
    assert p.stat() == (3, sum(sizes))
    p.dele(2)
    p.noop()
    assert p.quit().startswith(b"+OK")
    names = [f.name.split(":", 1)[0] for f in env.files(ALICE)]
    assert names == [f1.name, f3.name]

    # UIDLs are stable across sessions (the files moved from new/ to cur/ meanwhile)
    p = poplib_login(env)
    _, uidls, _ = p.uidl()
    assert [l.split()[1] for l in uidls] == [uids[0], uids[2]]
    p.quit()


def test_poplib_stls(pop3env):
    env = pop3env(tls=("starttls",))
    env.seed(ALICE, CRLF_MSG)
    p = poplib.POP3("127.0.0.1", env.port("starttls"), timeout=IO_TIMEOUT)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps
    assert caps.get("SASL") == ["SCRAM-SHA-256"]          # no plaintext mechanism before TLS
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.user(ALICE)
    p.stls(ctx())
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    p.user(ALICE)
    p.pass_(ALICE_PW)
    _, lines, _ = p.retr(1)
    assert poplib_bytes(lines) == CRLF_MSG
    p.quit()


def test_poplib_ssl(pop3env):
    env = pop3env(tls=("implicit",))
    env.seed(ALICE, LF_MSG)
    p = poplib.POP3_SSL("127.0.0.1", env.port("implicit"), timeout=IO_TIMEOUT, context=ctx())
    assert "STLS" not in p.capa()
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert p.stat() == (1, len(crlf(LF_MSG)))
    _, lines, _ = p.retr(1)
    assert poplib_bytes(lines) == crlf(LF_MSG)
    p.quit()


def test_tls_required(pop3env):
    env = pop3env(tls=("required",))
    env.seed(ALICE, CRLF_MSG)
    p = poplib.POP3("127.0.0.1", env.port("required"), timeout=IO_TIMEOUT)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    for attempt in (lambda: p.user(ALICE), lambda: p.pass_(ALICE_PW), lambda: p.apop(ALICE, ALICE_PW),
                    lambda: p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0" + ALICE.encode() + b"\0" +
                                                                          ALICE_PW.encode()).decode())):
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
            attempt()
    p.stls(ctx())
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert p.stat()[0] == 1
    p.quit()


def test_apop(pop3env):
    env = pop3env(tls=("off",))
    env.seed(ALICE, CRLF_MSG)
    p = poplib.POP3("127.0.0.1", env.port(), timeout=IO_TIMEOUT)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Authentication failed"):
        p.apop(ALICE, "wrong")
    p.apop(ALICE, ALICE_PW)
    assert p.stat()[0] == 1
    p.quit()


def test_wrong_password_and_unknown_user(pop3env):
    env = pop3env(tls=("off",))
    p = poplib.POP3("127.0.0.1", env.port(), timeout=IO_TIMEOUT)
    p.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        p.pass_("nope")
    p.user("nobody@example.test")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        p.pass_(ALICE_PW)
    p.user(ALICE)
    p.pass_(ALICE_PW)
    p.quit()
    log = env.srv.stderr_text()
    assert "[mp40102]" in log and "[mp40101]" in log
    assert "nope" not in log and ALICE_PW not in log      # never a password in the log


# ---------------------------------------------------------------------------------------------------------
# raw protocol

def test_auth_plain_and_errors_raw(pop3env):
    env = pop3env(tls=("implicit",))
    with env.client("implicit") as c:
        assert c.cmd("AUTH PLAIN !!!") == "-ERR Invalid base64 data"
        assert c.cmd("AUTH LOGIN") == "+ VXNlcm5hbWU6"
        assert c.cmd("*") == "-ERR Authentication cancelled"
        assert c.cmd("AUTH PLAIN") == "+ "
        token = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + ALICE_PW.encode()).decode()
        assert c.cmd(token).startswith("+OK Logged in")
        assert c.cmd("STAT") == "+OK 0 0"
        assert c.cmd("QUIT") == "+OK Logging out"


def test_pipelining_and_bad_arguments(pop3env):
    env = pop3env(tls=("off",))
    env.seed(ALICE, CRLF_MSG)
    with env.client() as c:
        c.send(f"USER {ALICE}\r\nPASS {ALICE_PW}\r\nSTAT\r\nRETR 0\r\nRETR -1\r\nRETR 99999999999999999999\r\n"
               f"RETR 1x\r\nTOP 1 -5\r\nDELE 1\r\nDELE 1\r\nRSET\r\nLIST 1\r\nXYZZY\r\n")
        got = [c.readline() for _ in range(13)]
        assert got[0] == "+OK" and got[1].startswith("+OK Logged in")
        assert got[2] == f"+OK 1 {len(CRLF_MSG)}"
        assert got[3:8] == ["-ERR No such message", "-ERR Invalid message number", "-ERR No such message",
                            "-ERR Invalid message number", "-ERR Invalid number of lines"]
        assert got[8:11] == ["+OK Marked to be deleted", "-ERR Message 1 already deleted",
                             f"+OK 1 messages ({len(CRLF_MSG)} octets)"]
        assert got[11] == f"+OK 1 {len(CRLF_MSG)}"
        assert got[12] == "-ERR Unknown command"
        assert c.cmd("A" * 600) == "-ERR Line too long"
        assert c.cmd("noop") == "+OK"
        assert c.cmd("QUIT") == "+OK Logging out"
    assert len(env.files(ALICE)) == 1


def test_stls_injection_is_discarded(pop3env):
    env = pop3env(tls=("starttls",))
    with env.client("starttls") as c:
        c.send("STLS\r\nUSER alice@example.test\r\nPASS wonderland\r\n")
        assert c.readline() == "+OK Begin TLS negotiation"
        c.starttls(ctx())
        # the pipelined USER/PASS were dropped with the plaintext: PASS has no USER before it
        assert c.cmd("PASS wonderland") == "-ERR No user name given: USER first"
        assert c.cmd(f"USER {ALICE}") == "+OK"
        assert c.cmd(f"PASS {ALICE_PW}").startswith("+OK Logged in")


def test_large_message_byte_exact(pop3env):
    env = pop3env(tls=("off", "implicit"))
    body = bytearray(b"Subject: big\r\n\r\n")
    i = 0
    while len(body) < 6 * 1024 * 1024:
        body += (b"." if i % 3 == 0 else b"") + b"line %d of a large message with some text\r\n" % i
        i += 1
    env.seed(ALICE, bytes(body))
    for tls in ("off", "implicit"):
        c = env.login(tls)
        status, got = retr(c, 1, timeout=60)
        assert status == f"+OK {len(body)} octets"
        assert got == bytes(body)
        assert c.cmd("QUIT") == "+OK Logging out"
        c.close()


def test_two_sessions_in_use(pop3env):
    env = pop3env(tls=("off", "implicit"))
    env.seed(ALICE, CRLF_MSG)
    first = poplib_login(env)
    second = poplib.POP3_SSL("127.0.0.1", env.port("implicit"), timeout=IO_TIMEOUT, context=ctx())
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(ALICE_PW)
    # still in AUTHORIZATION: it may try again once the first session is done
    first.dele(1)
    first.quit()
    second.user(ALICE)
    second.pass_(ALICE_PW)
    assert second.stat() == (0, 0)
    second.quit()
    assert env.files(ALICE) == []


def test_login_waits_for_a_session_that_ends(pop3env):
    """POP3LockWait: a login that finds the maildrop locked tries again while the wait lasts, so a session that
    ends meanwhile hands the maildrop over instead of the newcomer getting [IN-USE]."""
    env = pop3env(tls=("off",), POP3LockWait="20s")
    env.seed(ALICE, CRLF_MSG)
    first = env.login()
    second = env.client()
    assert second.cmd(f"USER {ALICE}") == "+OK"
    second.send(f"PASS {ALICE_PW}\r\nSTAT\r\n")
    # no answer while the first session holds the maildrop (an [IN-USE] would come at once without the wait)
    with pytest.raises(socket.timeout):
        second.readline(timeout=0.5)
    assert first.cmd("DELE 1") == "+OK Marked to be deleted"
    assert first.cmd("QUIT") == "+OK Logging out"
    first.close()
    # the maildrop as the first session left it, and the pipelined STAT after the login
    assert second.readline().startswith("+OK Logged in, 0 messages")
    assert second.readline() == "+OK 0 0"
    assert second.cmd("QUIT") == "+OK Logging out"
    second.close()


def test_dropped_connection_deletes_nothing(pop3env):
    env = pop3env(tls=("off",))
    env.seed(ALICE, CRLF_MSG)
    env.seed(ALICE, LF_MSG)
    c = env.login()
    assert c.cmd("DELE 1") == "+OK Marked to be deleted"
    assert c.cmd("DELE 2") == "+OK Marked to be deleted"
    # an abortive close (RST), no QUIT
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    c2 = wait_unlocked(env)
    assert c2.cmd("STAT") == f"+OK 2 {len(CRLF_MSG) + len(crlf(LF_MSG))}"
    assert c2.cmd("QUIT") == "+OK Logging out"
    c2.close()
    assert len(env.files(ALICE)) == 2

    # mid-RETR too
    big = b"Subject: big\r\n\r\n" + b"x" * 4_000_000 + b"\r\n"
    env.seed(ALICE, big)
    c = env.login()
    assert c.cmd("DELE 1") == "+OK Marked to be deleted"
    assert c.cmd("RETR 3").startswith("+OK")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    c2 = wait_unlocked(env)
    assert c2.cmd("STAT").startswith("+OK 3 ")
    c2.cmd("QUIT")
    c2.close()


def test_delivery_during_session_appears_in_next(pop3env):
    env = pop3env(tls=("off",))
    env.seed(ALICE, CRLF_MSG)
    c = env.login()
    env.seed(ALICE, LF_MSG)
    assert c.cmd("STAT") == f"+OK 1 {len(CRLF_MSG)}"
    assert c.cmd("RETR 2") == "-ERR No such message"
    assert c.cmd("DELE 1") == "+OK Marked to be deleted"
    assert c.cmd("QUIT") == "+OK Logging out"
    c.close()
    c = env.login()
    assert c.cmd("STAT") == f"+OK 1 {len(crlf(LF_MSG))}"
    status, got = retr(c, 1)
    assert got == crlf(LF_MSG)
    c.cmd("QUIT")
    c.close()


def test_smtp_delivery_byte_for_byte(pop3env):
    env = pop3env(tls=("off",), smtp=True)
    msg = (b"Subject: via smtp\r\nFrom: sender@example.org\r\nTo: alice@example.test\r\nMessage-ID: <t1@example.org>\r\n"
           b"\r\nline one\r\n.leading dot\r\n..two\r\n\r\nlast\r\n")
    with smtplib.SMTP("127.0.0.1", env.port("smtp"), timeout=IO_TIMEOUT) as s:
        s.sendmail("sender@example.org", [ALICE], msg)
    c = env.login()
    status, got = retr(c, 1)
    # what POP3 serves is exactly what the store holds, and ends with exactly what was sent
    (f,) = env.files(ALICE)
    assert got == crlf(f.read_bytes())
    assert got.endswith(msg)
    c.cmd("QUIT")
    c.close()


# ---------------------------------------------------------------------------------------------------------
# curl

def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, timeout=timeout)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_curl(pop3env):
    env = pop3env(tls=("off", "starttls", "implicit"))
    env.seed(ALICE, CRLF_MSG)
    env.seed(ALICE, LF_MSG)
    auth = ["-u", f"{ALICE}:{ALICE_PW}"]
    sizes = [len(CRLF_MSG), len(crlf(LF_MSG))]

    r = curl(*auth, f"pop3://127.0.0.1:{env.port('off')}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"1 %d\r\n2 %d\r\n" % tuple(sizes)
    r = curl(*auth, f"pop3://127.0.0.1:{env.port('off')}/2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == crlf(LF_MSG)

    # STLS (refused before it on this listener, so --ssl-reqd makes curl upgrade first)
    r = curl(*auth, "--ssl-reqd", "-k", f"pop3://127.0.0.1:{env.port('starttls')}/1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == CRLF_MSG

    r = curl(*auth, "-k", f"pop3s://127.0.0.1:{env.port('implicit')}/1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == CRLF_MSG
    r = curl(*auth, "-k", f"pop3s://127.0.0.1:{env.port('implicit')}/")
    assert r.stdout == b"1 %d\r\n2 %d\r\n" % tuple(sizes)

    # a wrong password: curl fails with a login error (67)
    r = curl("-u", f"{ALICE}:bad", f"pop3://127.0.0.1:{env.port('off')}/")
    assert r.returncode == 67, (r.returncode, r.stderr)

    # curl's DELE: -X DELE, then QUIT carries it out
    r = curl(*auth, "-X", "DELE", "-I", f"pop3://127.0.0.1:{env.port('off')}/1")
    assert r.returncode == 0, r.stderr
    assert len(env.files(ALICE)) == 1


# ---------------------------------------------------------------------------------------------------------
# fetchmail

def run_fetchmail(env, tmp_path, keep, tls="off"):
    out = tmp_path / f"fetched-{'keep' if keep else 'nokeep'}-{tls}"
    out.mkdir()
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    store = tmp_path / "store.sh"
    store.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {out}/msg.XXXXXX)"\n')
    store.chmod(0o755)
    rc = home / "fetchmailrc"
    # plaintext: sslproto '' (no STLS attempt); implicit TLS: ssl without certificate checks (self-signed)
    opts = "ssl no sslcertck" if tls == "implicit" else "sslproto ''"
    rc.write_text(f"set no bouncemail\nset no syslog\nset invisible\n"
                  f"poll 127.0.0.1 with protocol POP3 port {env.port(tls)} uidl\n"
                  f"  user \"{ALICE}\" there with password \"{ALICE_PW}\" is \"tester\" here\n"
                  f"  {'keep' if keep else 'no keep'} fetchall {opts}\n"
                  f"  mda \"{store}\"\n")
    rc.chmod(0o600)
    r = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "-v", "--pidfile", str(home / "fetchmail.pid")],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home)))
    # 0: mail fetched; 1: no mail
    assert r.returncode in (0, 1), f"fetchmail exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return sorted(p.read_bytes() for p in out.iterdir()), r


def normalise(data):
    return data.replace(b"\r\n", b"\n")


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="fetchmail is not installed (apt-get install fetchmail)")
@pytest.mark.parametrize("tls", ["off", "implicit"])
def test_fetchmail_keep_and_nokeep(pop3env, tmp_path, tls):
    env = pop3env(tls=(tls,))
    # (fetchmail splits lines over 8 KiB itself, so the large one has ordinary lines)
    msgs = [CRLF_MSG, LF_MSG, b"Subject: third\r\n\r\n" + b"".join(b".y%05d " % i + b"y" * 68 + b"\r\n"
                                                               for i in range(3000))]
    for m in msgs:
        env.seed(ALICE, m)

    fetched, r = run_fetchmail(env, tmp_path, keep=True, tls=tls)
    assert len(fetched) == 3, r.stdout + r.stderr
    assert sorted(normalise(f) for f in fetched) == sorted(normalise(m) for m in msgs)
    assert len(env.files(ALICE)) == 3                 # --keep: everything stays on the server

    fetched, r = run_fetchmail(env, tmp_path, keep=False, tls=tls)
    assert sorted(normalise(f) for f in fetched) == sorted(normalise(m) for m in msgs)
    assert env.files(ALICE) == []                     # without --keep: deleted at QUIT
    p = poplib_login(env, tls)
    assert p.stat() == (0, 0)
    p.quit()


# ---------------------------------------------------------------------------------------------------------
# RFC 6856: UTF8 and LANG

UTF8_HDR_MSG = ("Subject: Gr\u00fc\u00dfe aus K\u00f6ln\r\nFrom: J\u00fcrgen <j\u00fcrgen@example.test>\r\n"
                "To: alice@example.test\r\n\r\nHallo Alice\r\n").encode()
BODY8_MSG = "Subject: ascii header\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\u00fc\u00dfe\r\n".encode()


def proto_error(excinfo):
    return excinfo.value.args[0]


def test_poplib_utf8_and_lang(pop3env):
    """UTF8, LANG and a UTF-8 user name and password through poplib (its utf8(), _shortcmd, _longcmd)."""
    env = pop3env(tls=("off",), users=UTF8_USERS)
    env.seed(JUERGEN, UTF8_HDR_MSG)
    p = poplib.POP3("127.0.0.1", env.port(), timeout=IO_TIMEOUT)
    caps = p.capa()
    assert caps["UTF8"] == ["USER"] and caps["LANG"] == [], caps
    # LANG before login (RFC 6856 section 3): the listing, English under any English range and "*"
    assert p._longcmd("LANG") == (b"+OK Language listing follows", [b"en English"], len(b"en English") + 2)
    for rng in ("en", "en-US", "EN-gb", "*"):
        assert p._shortcmd(f"LANG {rng}") == b"+OK en Responses will be in English"
    with pytest.raises(poplib.error_proto) as e:
        p._shortcmd("LANG de")
    assert proto_error(e) == b"-ERR Language de is not supported"
    with pytest.raises(poplib.error_proto) as e:
        p._shortcmd("LANG en_US")
    assert proto_error(e) == b"-ERR Invalid language range"
    # UTF8, then a UTF-8 user name and password (poplib sends UTF-8)
    assert p.utf8() == b"+OK UTF8 enabled"
    assert p.utf8() == b"+OK UTF8 already enabled"
    p.user(JUERGEN)
    assert p.pass_(JUERGEN_PW).startswith(b"+OK Logged in, 1 messages")
    # in UTF-8 mode the message comes as stored, UTF-8 header fields and all
    resp, lines, _ = p.retr(1)
    assert resp == b"+OK %d octets" % len(UTF8_HDR_MSG)
    assert poplib_bytes(lines) == UTF8_HDR_MSG
    assert p.top(1, 0)[1] == UTF8_HDR_MSG.split(b"\r\n\r\n")[0].split(b"\r\n") + [b""]
    # TRANSACTION: LANG still works, UTF8 does not (AUTHORIZATION only)
    assert p._shortcmd("LANG *") == b"+OK en Responses will be in English"
    assert p._longcmd("LANG")[1] == [b"en English"]
    with pytest.raises(poplib.error_proto) as e:
        p.utf8()
    assert proto_error(e) == b"-ERR UTF8 is only valid before login"
    assert p.quit().startswith(b"+OK")

    # RFC 6856 section 2.2: a client may send UTF-8 credentials before UTF8 once "UTF8 USER" is announced
    p = poplib_login(env, user=JUERGEN, password=JUERGEN_PW)
    p.quit()
    # a wrong UTF-8 password fails as any other
    c = env.client()
    assert c.cmd("UTF8") == "+OK UTF8 enabled"
    assert c.cmd(f"USER {JUERGEN}") == "+OK"
    assert c.cmd("PASS p\u00e4ssword") == "-ERR [AUTH] Authentication failed"
    # in UTF-8 mode bytes that are not UTF-8 are refused outright
    c.send(b"USER j\xfcrgen@example.test\r\n")
    assert c.readline() == "-ERR Invalid UTF-8 in user name"
    c.send(b"USER " + JUERGEN.encode() + b"\r\nPASS p\xe4ssw\xf6rd\r\n")
    assert [c.readline(), c.readline()] == ["+OK", "-ERR Invalid UTF-8 in password"]
    c.close()


def test_utf8_headers_surrogate_outside_utf8_mode(pop3env):
    """RFC 6856 section 2.1: without UTF8 a message with non-ASCII header fields comes as a surrogate, its
    8-bit header bytes as "?" and its size the one LIST gave; with UTF8 it is sent as stored. 8-bit bodies
    are sent as they are either way."""
    env = pop3env(tls=("off", "starttls"))
    f1 = env.seed(ALICE, CRLF_MSG)
    f2 = env.seed(ALICE, UTF8_HDR_MSG)
    f3 = env.seed(ALICE, BODY8_MSG)
    head, body = UTF8_HDR_MSG.split(b"\r\n\r\n", 1)
    surrogate = bytes(b if b < 0x80 else 0x3F for b in head) + b"\r\n\r\n" + body
    assert surrogate.startswith(b"Subject: Gr????e aus K??ln\r\nFrom: J??rgen <j??rgen@example.test>")

    p = poplib_login(env)
    assert [int(l.split()[1]) for l in p.list()[1]] == [len(crlf(CRLF_MSG)), len(UTF8_HDR_MSG), len(BODY8_MSG)]
    assert [l.split()[1] for l in p.uidl()[1]] == [f.name.encode() for f in (f1, f2, f3)]
    resp, lines, _ = p.retr(2)
    assert resp == b"+OK %d octets" % len(UTF8_HDR_MSG)
    assert poplib_bytes(lines) == surrogate
    assert p.top(2, 0)[1] == surrogate.split(b"\r\n\r\n")[0].split(b"\r\n") + [b""]
    assert poplib_bytes(p.retr(1)[1]) == crlf(CRLF_MSG)
    assert poplib_bytes(p.retr(3)[1]) == BODY8_MSG
    p.quit()

    # with UTF8 before the login it comes as it is
    p = poplib.POP3("127.0.0.1", env.port(), timeout=IO_TIMEOUT)
    assert p.utf8() == b"+OK UTF8 enabled"
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert poplib_bytes(p.retr(2)[1]) == UTF8_HDR_MSG
    p.quit()
    # the stored message was never changed
    assert env.file_bytes(ALICE, f2.name) == UTF8_HDR_MSG

    # RFC 6856 section 2.1: no STLS after UTF8 (and CAPA stops offering it)
    c = env.client("starttls")
    assert c.cmd("UTF8") == "+OK UTF8 enabled"
    c.send("CAPA\r\n")
    assert c.readline() == "+OK Capability list follows"
    caps = read_multiline(c).decode().split("\r\n")
    assert "STLS" not in caps and "UTF8 USER" in caps and "LANG" in caps, caps
    assert c.cmd("STLS") == "-ERR STLS is not allowed after UTF8"
    assert c.cmd("NOOP") == "-ERR Not logged in"
    c.close()


# ---------------------------------------------------------------------------------------------------------
# goodbyes

def test_idle_autologout_and_shutdown_delete_nothing(pop3env):
    """RFC 1939 section 3: the autologout timer ends the session without UPDATE; so does a shutdown."""
    env = pop3env(tls=("off",), IdleTimeout="1s")
    env.seed(ALICE, CRLF_MSG)
    c = env.login()
    assert c.cmd("DELE 1") == "+OK Marked to be deleted"
    assert c.read_until_eof(timeout=10) == ["-ERR Disconnected for inactivity"]
    c.close()
    assert len(env.files(ALICE)) == 1

    c = wait_unlocked(env)
    assert c.cmd("DELE 1") == "+OK Marked to be deleted"
    # mailprotod: -s stop; httpd: apachectl -k stop, which ends connections as it does HTTP ones (a
    # graceful-stop would let the session finish), so there the goodbye line may not come
    r = env.srv.ctl("-k", "stop", check=False) if env.backend == "httpd" else env.srv.stop()
    assert r.returncode == 0, r.stderr
    goodbye = c.read_until_eof(timeout=10)
    assert goodbye == ["-ERR [SYS/TEMP] Server shutting down"] or (env.backend == "httpd" and goodbye == [])
    c.close()
    assert len(env.files(ALICE)) == 1


def test_idle_timeout_after_a_slow_login(pop3env):
    """The idle clock after a job that outlasted IdleTimeout (here a slow password hash on a worker): the
    autologout comes about IdleTimeout after the reply, not an hour later."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    slow = "slow@example.test"
    secret = "{SHA512-CRYPT}" + crypt.crypt("slowpw", "$6$rounds=6000000$saltsalt$")
    env = pop3env(tls=("off",), IdleTimeout="1s", secrets={slow: secret})
    c = env.client("off")
    assert c.cmd(f"USER {slow}") == "+OK"
    t0 = time.monotonic()
    r = c.cmd("PASS slowpw", timeout=60)
    t_ok = time.monotonic()
    assert r.startswith("+OK Logged in"), r
    assert t_ok - t0 > 1.0, "the login job did not outlast IdleTimeout: this test proves nothing"
    assert c.read_until_eof(timeout=20) == ["-ERR Disconnected for inactivity"]
    assert 0.5 <= time.monotonic() - t_ok < 10
    c.close()


def test_pipelined_commands_behind_a_slow_tls_login(pop3env):
    """Commands pipelined behind a login job over TLS: what OpenSSL already took from the socket (more than
    the host's line buffer holds) is read once the job is done, though no poll event will say so."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    slow = "slow@example.test"
    secret = "{SHA512-CRYPT}" + crypt.crypt("slowpw", "$6$rounds=3000000$saltsalt$")
    env = pop3env(tls=("implicit",), secrets={slow: secret})
    c = env.client("implicit")
    # 14.4 KB of NOOPs in one TLS record: the host's line buffer (MaxLineLength, 8 KB) takes part of it
    # while the job runs, OpenSSL holds the rest, and the socket has nothing left to wake a poll
    n = 2400
    c.send(f"USER {slow}\r\nPASS slowpw\r\n" + "NOOP\r\n" * n)
    assert c.readline(timeout=60) == "+OK"
    assert c.readline(timeout=60).startswith("+OK Logged in")
    for i in range(n):
        assert c.readline(timeout=30) == "+OK", f"NOOP {i + 1} of {n}"
    assert c.cmd("QUIT") == "+OK Logging out"
    c.close()
