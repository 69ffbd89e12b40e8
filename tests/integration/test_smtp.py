"""
mod_smtp and mod_lmtp in the real mailprotod with mod_maildir and mod_passwd, driven by real clients:
Python's smtplib (plain, STARTTLS, SMTP_SSL, AUTH PLAIN/LOGIN, SMTPUTF8, LMTP), swaks, curl, raw sockets,
and Postfix as a peer MTA. Every delivered message is checked byte for byte in the Maildir: our
Return-Path and Received fields, then exactly the bytes the client sent (after dot-unstuffing).
"""
import base64
import email.utils
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, SERVER_NAME, client_context, wait_for
from smtpenv import (SmtpClient, check_delivered, message, parse_dsn, split_trace, start_smtp_httpd,
                     start_smtp_server)


@pytest.fixture(params=["mailprotod", "httpd"])
def env(request, make_server, free_port, tls_cert):
    """Every SMTP test runs against mailprotod and against the same handlers inside Apache httpd."""
    if request.param == "httpd":
        return start_smtp_httpd(tls_cert, free_port, request)
    return start_smtp_server(make_server, free_port)


def tls_ctx():
    return client_context(None)


def smtp(port, **kw):
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=IO_TIMEOUT, **kw)


def plain_b64(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


# ---------------------------------------------------------------------------------------------------- smtplib

def test_smtplib_mx_plain(env):
    with smtp(env.mx) as s:
        code, _ = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "chunking", "dsn",
                    "starttls"):
            assert s.has_extn(ext), ext
        assert not s.has_extn("auth")          # only after STARTTLS
        assert s.esmtp_features["size"] == str(1024 * 1024)
        body = message("plain", "Line one.\r\n.dot line\r\n..two dots\r\n")
        assert s.sendmail("sender@remote.example", ["alice@example.test"], body) == {}
    [data] = env.wait_messages("alice@example.test", 1)
    m = check_delivered(data, "sender@remote.example", body, with_="ESMTP", for_="alice@example.test", tls=False)
    assert m.group("helo") == b"client.example" and m.group("ip") == b"127.0.0.1"


def test_smtplib_mx_relay_and_unknown_user(env):
    with smtp(env.mx) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("sender@remote.example", ["victim@elsewhere.example"], message())
        assert e.value.recipients["victim@elsewhere.example"][0] == 550
        assert b"5.7.1" in e.value.recipients["victim@elsewhere.example"][1]
        refused = s.sendmail("sender@remote.example", ["nobody@example.test", "alice@example.test"], message())
        assert refused["nobody@example.test"][0] == 550
        assert refused["nobody@example.test"][1].startswith(b"5.1.1")
        code, msg = s.docmd("VRFY", "alice")
        assert code == 252
    env.wait_messages("alice@example.test", 1)
    assert "[mp30020]" in env.srv.stderr_text()


def test_smtplib_starttls_mx(env):
    with smtp(env.mx) as s:
        s.ehlo()
        s.starttls(context=tls_ctx())
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"]
        body = message("over tls")
        s.sendmail("sender@remote.example", ["bob@example.test"], body)
    [data] = env.wait_messages("bob@example.test", 1)
    m = check_delivered(data, "sender@remote.example", body, with_="ESMTPS", tls=True)
    assert m.group("cipher")


def test_submission_587_policy(env):
    with smtp(env.sub) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        # AUTH and MAIL before STARTTLS: 530 (RFC 3207 section 4)
        code, msg = s.docmd("AUTH", "PLAIN " + plain_b64("alice@example.test", "wonderland"))
        assert (code, msg) == (530, b"5.7.0 Must issue a STARTTLS command first")
        code, msg = s.docmd("MAIL", "FROM:<alice@example.test>")
        assert code == 530
        s.starttls(context=tls_ctx())
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        code, msg = s.docmd("MAIL", "FROM:<alice@example.test>")
        assert (code, msg) == (530, b"5.7.0 Authentication required")
        # a wrong password: 535 5.7.8, after the provider's delay
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice@example.test", "wrong")
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8")
        s.login("alice@example.test", "wonderland")           # PLAIN
        code, msg = s.docmd("AUTH", "PLAIN")
        assert code == 503
        # the sender must be the user's own
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("bob@example.test", ["alice@example.test"], message())
        assert e.value.smtp_code == 553 and e.value.smtp_error.startswith(b"5.7.1")
        s.rset()
        # other domains: no outbound queue yet, a temporary refusal
        refused = s.sendmail("alice@EXAMPLE.test", ["friend@elsewhere.example", "bob@example.test"], message("sub"))
        assert refused["friend@elsewhere.example"][0] == 451
        assert refused["friend@elsewhere.example"][1].startswith(b"4.3.0")
    [data] = env.wait_messages("bob@example.test", 1)
    check_delivered(data, "alice@EXAMPLE.test", message("sub"), with_="ESMTPSA", tls=True)
    log = env.srv.stderr_text()
    assert "[mp30030] s=" in log and "AUTH PLAIN succeeded for user 'alice@example.test'" in log
    assert "[mp30031]" in log and "wonderland" not in log and "wrong" not in log


def test_submission_login_sha512(env):
    with smtp(env.sub) as s:
        s.starttls(context=tls_ctx())
        s.ehlo()
        s.user, s.password = "bob@example.test", "builder"
        code, _ = s.auth("LOGIN", s.auth_login)
        assert code == 235
        s.sendmail("bob@example.test", ["carol@example.test"], message("login"))
    [data] = env.wait_messages("carol@example.test", 1)
    check_delivered(data, "bob@example.test", message("login"), with_="ESMTPSA")


def test_smtp_ssl_465(env):
    with smtplib.SMTP_SSL("127.0.0.1", env.subs, local_hostname="client.example", context=tls_ctx(),
                          timeout=IO_TIMEOUT) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        s.login("alice@example.test", "wonderland")
        body = message("implicit", "x" * 5000 + "\r\n")
        s.sendmail("alice@example.test", ["alice@example.test", "bob@example.test"], body)
    for user in ("alice@example.test", "bob@example.test"):
        [data] = env.wait_messages(user, 1)
        m = check_delivered(data, "alice@example.test", body, with_="ESMTPSA", for_="", tls=True)
        assert m.group("tls") in (b"TLSv1.2", b"TLSv1.3")


def test_smtputf8(env):
    sender = "jos\u00e9@remote.example"
    body = "From: jos\u00e9\r\nSubject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    with smtp(env.mx) as s:
        s.ehlo()
        assert s.has_extn("smtputf8")
        s.sendmail(sender, ["alice@example.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        # without SMTPUTF8, a non-ASCII address is refused (RFC 6531 section 3.4)
        s.command_encoding = "utf-8"
        code, msg = s.docmd("MAIL", f"FROM:<{sender}>")
        assert code == 553 and msg.startswith(b"5.6.7")
    [data] = env.wait_messages("alice@example.test", 1)
    check_delivered(data, sender, body, with_="UTF8SMTP")


def test_lmtp_smtplib(env):
    with smtplib.LMTP("127.0.0.1", env.lmtp, local_hostname="mta.example", timeout=IO_TIMEOUT) as s:
        code, _ = s.ehlo()                       # smtplib.LMTP says LHLO
        assert code == 250 and s.has_extn("pipelining")
        body = message("lmtp")
        assert s.sendmail("sender@remote.example", ["carol@example.test"], body) == {}
        # several recipients: one reply each after the data (RFC 2033 section 4.2)
        s.mail("sender@remote.example")
        assert s.rcpt("alice@example.test")[0] == 250
        assert s.rcpt("nobody@example.test")[0] == 550
        assert s.rcpt("bob@example.test")[0] == 250
        code, msg = s.data(message("lmtp2"))
        assert code == 250 and b"<alice@example.test>" in msg
        code, msg = s.getreply()
        assert code == 250 and b"<bob@example.test>" in msg
        assert s.noop()[0] == 250
    [data] = env.wait_messages("carol@example.test", 1)
    check_delivered(data, "sender@remote.example", body, with_="LMTP", for_="carol@example.test")
    for user in ("alice@example.test", "bob@example.test"):
        [data] = env.wait_messages(user, 1)
        check_delivered(data, "sender@remote.example", message("lmtp2"), with_="LMTP")


# ---------------------------------------------------------------------------------------------------- DSN

def stored_id(reply):
    code, msg = reply
    assert code == 250 and msg.startswith(b"2.0.0 Ok: stored as "), reply
    return msg[len(b"2.0.0 Ok: stored as "):].decode()


def test_dsn_delivered_to_local_sender(env):
    """RFC 3461: NOTIFY=SUCCESS on submission, from one user to another: the sender gets a "delivered" DSN."""
    body = message("dsn please", "The body stays here.\r\n")
    with smtp(env.sub) as s:
        s.starttls(context=tls_ctx())
        s.login("alice@example.test", "wonderland")
        assert s.has_extn("dsn")
        s.mail("alice@example.test", ["RET=HDRS", "ENVID=QQ314159+2Bx"])
        assert s.rcpt("bob@example.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob+40example.test"])[0] == 250
        assert s.rcpt("carol@example.test", ["NOTIFY=FAILURE"])[0] == 250
        msg_id = stored_id(s.data(body))
    [orig] = env.wait_messages("bob@example.test", 1)
    check_delivered(orig, "alice@example.test", body, with_="ESMTPSA")
    assert len(env.wait_messages("carol@example.test", 1)) == 1
    [data] = env.wait_messages("alice@example.test", 1)
    assert data.startswith(b"Return-Path: <>\r\n")                 # sent with a null reverse-path
    dsn = parse_dsn(data)
    assert dsn.msg["From"] == f"Mail Delivery System <MAILER-DAEMON@{SERVER_NAME}>"
    assert dsn.msg["To"] == "<alice@example.test>"
    assert dsn.msg["Auto-Submitted"] == "auto-replied"
    assert dsn.per_message["Original-Envelope-Id"] == "QQ314159+x"     # xtext-decoded
    assert dsn.per_message["Reporting-MTA"] == f"dns; {SERVER_NAME}"
    email.utils.parsedate_to_datetime(dsn.per_message["Arrival-Date"])
    [r] = dsn.recipients                                                  # carol did not ask
    assert r["Original-Recipient"] == "rfc822;Bob@example.test"
    assert r["Final-Recipient"] == "rfc822; bob@example.test"
    assert r["Action"] == "delivered"
    assert r["Status"] == "2.0.0"
    assert r["Final-Log-ID"] == msg_id
    assert f"id {msg_id}".encode() in split_trace(orig)[1]               # the id of bob's Received field
    assert "Subject: dsn please" in dsn.headers and "The body stays here" not in data.decode()
    assert "<bob@example.test>" in dsn.text
    assert re.search(rf"\[mp30052\] .* DSN stored: id={msg_id}\.DSN for message {msg_id} to=<alice@example\.test>",
                     env.srv.stderr_text())


def test_dsn_only_when_asked_and_possible(env):
    """No DSN for NOTIFY=NEVER/FAILURE/none, nor for MAIL FROM:<>; a remote sender's is logged, not sent;
    RET=FULL still returns the header only (RFC 3461 section 4.3)."""
    with smtp(env.mx) as s:
        s.ehlo()
        s.mail("carol@example.test", ["RET=FULL"])
        s.rcpt("alice@example.test", ["NOTIFY=SUCCESS"])
        stored_id(s.data(message("full", "Not returned.\r\n")))
        for notify in (["NOTIFY=NEVER"], ["NOTIFY=FAILURE,DELAY"], []):
            assert s.sendmail("carol@example.test", ["alice@example.test"], message("no dsn"),
                              rcpt_options=notify) == {}
        assert s.sendmail("", ["alice@example.test"], message("null sender"), rcpt_options=["NOTIFY=SUCCESS"]) == {}
        s.mail("someone@remote.example", ["ENVID=r1"])
        s.rcpt("alice@example.test", ["NOTIFY=SUCCESS"])
        remote_id = stored_id(s.data(message("remote")))
    # the DSN job runs before the next command is read: everything is in place once QUIT was answered
    assert len(env.messages("alice@example.test")) == 6
    [data] = env.messages("carol@example.test")
    dsn = parse_dsn(data)
    assert dsn.per_message["Original-Envelope-Id"] is None
    assert dsn.recipients[0]["Original-Recipient"] is None
    assert dsn.recipients[0]["Final-Recipient"] == "rfc822; alice@example.test"
    assert "Subject: full" in dsn.headers and b"Not returned." not in data
    wait_for(lambda: re.search(rf"\[mp30050\] .* DSN not sent for message {remote_id}: from=<someone@remote\.example> "
                               r"is not local and there is no outbound queue", env.srv.stderr_text()),
             10, "the log line of the DSN that has nowhere to go")


def test_lmtp_announces_no_dsn(env):
    """LMTP leaves success reports to the MTA in front of it: no DSN keyword, no DSN of its own."""
    with smtplib.LMTP("127.0.0.1", env.lmtp, local_hostname="mta.example", timeout=IO_TIMEOUT) as s:
        s.ehlo()
        assert not s.has_extn("dsn")
        assert s.sendmail("carol@example.test", ["alice@example.test"], message("lmtp dsn"),
                          rcpt_options=["NOTIFY=SUCCESS"]) == {}
    assert len(env.messages("alice@example.test")) == 1
    assert env.messages("carol@example.test") == []


# ---------------------------------------------------------------------------------------------------- raw

def test_raw_pipelining_bdat_and_smuggling(env):
    with SmtpClient.connect(env.mx) as c:
        assert c.greeting == f"220 {SERVER_NAME} ESMTP mailproto"
        c.send("EHLO client.example\r\n")
        assert c.reply()[-1] == "250 DSN"
        # smuggling attempt: "\n.\n" does not end the data, the hidden transaction never runs
        c.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert [c.readline() for _ in range(3)] == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                                                      "354 End data with <CR><LF>.<CR><LF>"]
        c.send("Subject: one\r\n\r\nx\n.\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\n"
               "DATA\r\nSubject: smuggled\r\n\r\n.\r\n")
        assert c.readline() == "554 5.6.0 Message contains bare CR or LF characters"
        # BDAT (RFC 3030): the content may hold CRLF.CRLF; chunks counted
        chunk1 = b"Subject: bdat\r\n\r\nline\r\n.\r\n"
        chunk2 = b"after the dot\r\n"
        c.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\n" +
               f"BDAT {len(chunk1)}\r\n".encode() + chunk1 + f"BDAT {len(chunk2)} LAST\r\n".encode() + chunk2)
        replies = [c.readline() for _ in range(4)]
        assert replies[:3] == ["250 2.1.0 Ok", "250 2.1.5 Ok", f"250 2.0.0 Ok: {len(chunk1)} octets received"]
        assert replies[3].startswith("250 2.0.0 Ok: stored as ")
        # a bare LF in a command: the whole line is refused
        c.send("NOOP\nQUIT\r\nNOOP\r\n")
        assert c.readline() == "500 5.5.2 Error: bare <CR> or <LF> received"
        assert c.readline() == "250 2.0.0 Ok"
        # an over-long line
        c.send("NOOP " + "x" * 3000 + "\r\nNOOP\r\n")
        assert c.readline() == "500 5.5.2 Line too long"
        assert c.readline() == "250 2.0.0 Ok"
        assert c.command("QUIT")[0].startswith("221 2.0.0")
    [data] = env.wait_messages("bob@example.test", 1)
    check_delivered(data, "a@remote.example", chunk1 + chunk2)
    assert env.messages("alice@example.test") == []


def test_size_limits(env):
    with SmtpClient.connect(env.mx) as c:
        c.command("EHLO client.example")
        assert c.command("MAIL FROM:<a@remote.example> SIZE=2000000")[0].startswith("552 5.3.4")
        assert c.command("MAIL FROM:<a@remote.example> SIZE=1000")[0] == "250 2.1.0 Ok"
        assert c.command("RCPT TO:<alice@example.test>")[0] == "250 2.1.5 Ok"
        assert c.command("DATA")[0].startswith("354")
        line = b"y" * 998 + b"\r\n"
        for _ in range(1100):          # 1.1 MB: over MaxMessageSize 1M, read to the end anyway
            c.send(line)
        c.send(b".\r\n")
        assert c.readline(timeout=30) == "552 5.3.4 Message size exceeds fixed maximum message size"
        assert c.command("NOOP")[0] == "250 2.0.0 Ok"
    assert env.messages("alice@example.test") == []
    wait_for(lambda: env.tmp_files("alice@example.test") == [], 10, "no spool file left")


def test_dropped_mid_data_stores_nothing(env):
    c = SmtpClient.connect(env.mx)
    c.command("EHLO client.example")
    c.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [c.readline() for _ in range(3)][2].startswith("354")
    c.send("Subject: half\r\n\r\n" + "z" * 20000 + "\r\n")
    time.sleep(0.3)
    c.close()
    wait_for(lambda: "disconnect" in env.srv.stderr_text(), 10, "the server to see the disconnect")
    time.sleep(0.3)
    assert env.messages("alice@example.test") == []
    assert env.tmp_files("alice@example.test") == []


def test_starttls_injection(env):
    with SmtpClient.connect(env.mx) as c:
        c.command("EHLO client.example")
        c.send("STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\n")
        assert c.readline() == "220 2.0.0 Ready to start TLS"
        c.starttls(tls_ctx())
        # the pipelined MAIL was dropped, and EHLO is needed again
        assert c.command("MAIL FROM:<a@remote.example>")[0] == "503 5.5.1 Error: send HELO/EHLO first"
        assert c.command("EHLO client.example")[-1] == "250 DSN"


# ---------------------------------------------------------------------------------------------------- swaks, curl

def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")


def test_swaks(env):
    need("swaks")
    base = ["swaks", "--server", "127.0.0.1", "--helo", "client.example", "--timeout", "20"]
    r = run(base + ["--port", str(env.mx), "--from", "s@remote.example", "--to", "alice@example.test", "--pipeline",
                    "--header", "Subject: swaks pipeline"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Ok: stored as" in r.stdout
    # a relay attempt on the MX port
    r = run(base + ["--port", str(env.mx), "--from", "s@remote.example", "--to", "victim@elsewhere.example"])
    assert r.returncode != 0 and "550 5.7.1 <victim@elsewhere.example>: Relay access denied" in r.stdout
    # AUTH before STARTTLS on the required-TLS port: not offered, and refused when forced
    r = run(base + ["--port", str(env.sub), "--from", "alice@example.test", "--to", "bob@example.test",
                    "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "wonderland"])
    assert r.returncode != 0 and "250-AUTH" not in r.stdout
    # STARTTLS + AUTH on 587
    r = run(base + ["--port", str(env.sub), "--tls", "--from", "alice@example.test", "--to", "bob@example.test",
                    "--auth", "LOGIN", "--auth-user", "alice@example.test", "--auth-password", "wonderland"])
    assert r.returncode == 0, r.stdout + r.stderr
    # implicit TLS on 465
    r = run(base + ["--port", str(env.subs), "--tlsc", "--from", "alice@example.test", "--to", "carol@example.test",
                    "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "wonderland"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    env.wait_messages("alice@example.test", 1)
    env.wait_messages("bob@example.test", 1)
    [data] = env.wait_messages("carol@example.test", 1)
    assert b"with ESMTPSA id" in data


def test_curl(env, tmp_path):
    need("curl")
    body = message("curl", "via curl\r\n.leading dot\r\n")
    f = tmp_path / "msg.eml"
    f.write_bytes(body)
    common = ["curl", "-sS", "--max-time", "30", "--upload-file", str(f)]
    r = run(common + [f"smtp://127.0.0.1:{env.mx}/client.example", "--mail-from", "c@remote.example",
                      "--mail-rcpt", "alice@example.test"])
    assert r.returncode == 0, r.stderr
    r = run(common + [f"smtp://127.0.0.1:{env.sub}/client.example", "--ssl-reqd", "-k", "--user",
                      "alice@example.test:wonderland", "--mail-from", "alice@example.test", "--mail-rcpt",
                      "bob@example.test"])
    assert r.returncode == 0, r.stderr
    r = run(common + [f"smtps://127.0.0.1:{env.subs}/client.example", "-k", "--user", "bob@example.test:builder",
                      "--mail-from", "bob@example.test", "--mail-rcpt", "carol@example.test"])
    assert r.returncode == 0, r.stderr
    # relay refused
    r = run(common + [f"smtp://127.0.0.1:{env.mx}/client.example", "--mail-from", "c@remote.example",
                      "--mail-rcpt", "x@elsewhere.example"])
    assert r.returncode != 0
    [data] = env.wait_messages("alice@example.test", 1)
    check_delivered(data, "c@remote.example", body, with_="ESMTP")
    [data] = env.wait_messages("bob@example.test", 1)
    check_delivered(data, "alice@example.test", body, with_="ESMTPSA")
    [data] = env.wait_messages("carol@example.test", 1)
    check_delivered(data, "bob@example.test", body, with_="ESMTPSA")


# ---------------------------------------------------------------------------------------------------- Postfix

POSTFIX_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_log(pf):
    """Postfix's log so far ("" before it has written one)."""
    try:
        return pf.log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def postfix_available():
    return shutil.which("postfix") or os.path.exists("/usr/sbin/postfix")


@pytest.fixture
def postfix(free_port):
    """A private Postfix on a loopback high port, in its own folders (never the system instance)."""
    if not postfix_available():
        pytest.skip("postfix is not installed (apt-get install postfix; see tests/integration/test_smtp.py)")
    if os.geteuid() != 0:
        pytest.skip("Postfix needs root to start its own instance")
    # Postfix's daemons run as `postfix`: its folders must be reachable by that user (not under pytest's 0700)
    base = Path(tempfile.mkdtemp(prefix="mailproto-postfix-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    conf, spool, data, log = base / "conf", base / "spool", base / "data", base / "log"
    for d in (conf, spool, data, log):
        d.mkdir()
    shutil.chown(data, "postfix")
    port = free_port()

    class PF:
        pass

    pf = PF()
    pf.port, pf.conf, pf.log = port, conf, log / "postfix.log"

    def configure(transport):
        (conf / "transport").write_text(transport)
        (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.peer.test
mydomain = peer.test
myorigin = peer.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
transport_maps = texthash:{conf}/transport
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_tls_security_level = may
smtp_tls_loglevel = 1
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file_prefixes = /var, /dev/stdout, {log}
maillog_file = {pf.log}
default_process_limit = 10
""")
        (conf / "master.cf").write_text(POSTFIX_MASTER.format(port=port))

    def start():
        subprocess.run(["postfix", "-c", str(conf), "set-permissions"], capture_output=True, timeout=60)
        r = subprocess.run(["postfix", "-c", str(conf), "check"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"postfix check failed: {r.stdout}{r.stderr}")
        r = subprocess.run(["postfix", "-c", str(conf), "start"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"postfix start failed: {r.stdout}{r.stderr}")
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 30,
                 f"postfix on port {port}")

    pf.configure, pf.start = configure, start
    yield pf
    subprocess.run(["postfix", "-c", str(conf), "stop"], capture_output=True, timeout=60)
    time.sleep(0.5)
    shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_to_smtp_and_lmtp(env, postfix):
    # alice's mail goes to our SMTP (MX) listener, bob's to our LMTP listener
    postfix.configure(f"alice@example.test smtp:[127.0.0.1]:{env.mx}\n"
                      f"bob@example.test lmtp:inet:127.0.0.1:{env.lmtp}\n")
    postfix.start()
    body_a = message("via postfix smtp", "relayed by Postfix\r\n")
    body_b = message("via postfix lmtp", "delivered by Postfix over LMTP\r\n")
    with smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="client.example", timeout=IO_TIMEOUT) as s:
        s.sendmail("sender@peer.test", ["alice@example.test"], body_a)
        s.sendmail("sender@peer.test", ["bob@example.test"], body_b)

    try:
        [a] = env.wait_messages("alice@example.test", 1, timeout=60)
        [b] = env.wait_messages("bob@example.test", 1, timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}\npostfix log:\n{postfix_log(postfix)[-5000:]}") from None
    # Postfix adds its own trace fields; what it received from us sits under ours
    _, _, rest_a = __import__("smtpenv").split_trace(a)
    _, _, rest_b = __import__("smtpenv").split_trace(b)
    assert rest_a.endswith(b"\r\n\r\nrelayed by Postfix\r\n") and b"Subject: via postfix smtp" in rest_a
    assert rest_b.endswith(b"\r\n\r\ndelivered by Postfix over LMTP\r\n") and b"Subject: via postfix lmtp" in rest_b
    assert b"Received: from postfix.peer.test" in a and b"with ESMTPS id" in a   # Postfix used STARTTLS
    assert b"with LMTP id" in b
    wait_for(lambda: postfix_log(postfix).count("status=sent") >= 2, 30, "postfix to log both as sent")


def test_postfix_dsn_over_smtp_and_lmtp(env, postfix):
    """NOTIFY=SUCCESS through Postfix. Our SMTP announces DSN, so Postfix passes NOTIFY on and leaves the
    report to us; our LMTP does not, so Postfix reports bob's delivery itself ("delivered" with
    lmtp_assume_final). Either way the sender, carol, gets exactly one report per recipient."""
    postfix.configure(f"alice@example.test smtp:[127.0.0.1]:{env.mx}\n"
                      f"bob@example.test lmtp:inet:127.0.0.1:{env.lmtp}\n"
                      f"carol@example.test smtp:[127.0.0.1]:{env.mx}\n")
    with open(postfix.conf / "main.cf", "a") as f:
        f.write("lmtp_assume_final = yes\n")
    postfix.start()
    with smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="client.example", timeout=IO_TIMEOUT) as s:
        assert s.sendmail("carol@example.test", ["alice@example.test", "bob@example.test"], message("postfix dsn"),
                          mail_options=["ENVID=pf-1", "RET=HDRS"], rcpt_options=["NOTIFY=SUCCESS"]) == {}

    try:
        reports = env.wait_messages("carol@example.test", 2, timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}\npostfix log:\n{postfix_log(postfix)[-5000:]}") from None
    time.sleep(1)
    assert len(env.messages("carol@example.test")) == 2, postfix_log(postfix)[-5000:]
    by_mta = {d.per_message["Reporting-MTA"]: d for d in map(parse_dsn, reports)}
    assert set(by_mta) == {f"dns; {SERVER_NAME}", "dns; postfix.peer.test"}
    ours, theirs = by_mta[f"dns; {SERVER_NAME}"], by_mta["dns; postfix.peer.test"]
    assert ours.per_message["Original-Envelope-Id"] == "pf-1"      # passed on by Postfix
    [r] = ours.recipients
    assert (r["Final-Recipient"], r["Action"], r["Status"]) == ("rfc822; alice@example.test", "delivered", "2.0.0")
    assert r["Original-Recipient"].lower() == "rfc822;alice@example.test"
    [r] = theirs.recipients
    assert r["Final-Recipient"].replace(" ", "").lower() == "rfc822;bob@example.test"
    assert r["Action"] == "delivered" and r["Status"].startswith("2.")
