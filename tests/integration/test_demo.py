"""The README's quick start: `mailprotod` on its embedded default configuration (a demo domain and user,
a generated certificate, the standard ports on loopback, shifted by 10000 when not root). Mail that SMTP
accepts for the demo user is stored and then read back over POP3, as a user of the quick start would."""
import os
import poplib
import pwd
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD, MAILPROTOD, port_accepts, wait_for

USER, PASSWORD = "alice@example.test", "wonderland"


def ports():
    shift = 0 if os.geteuid() == 0 else 10000
    return {name: port + shift for name, port in
            (("smtp", 25), ("mx2", 2525), ("submission", 587), ("smtps", 465), ("pop3", 110), ("pop3s", 995))}


@pytest.fixture(params=["open", "closed"])
def demo(request, tmp_path):
    """`open`: the demo folder is reachable by the user `mail` (as root, the server drops to it);
    `closed`: a folder on the way is closed to it (it then stays root, and says so)."""
    for m in ("smtp", "pop3", "maildir", "passwd"):
        if not (BUILD / "modules" / f"mod_{m}.so").exists():
            pytest.fail(f"mod_{m}.so not built")
    p = ports()
    busy = [n for n, port in p.items() if port_accepts(port)]
    if busy:
        pytest.skip(f"ports of the demo are in use on this machine: {busy}")
    if request.param == "open":
        base = Path(tempfile.mkdtemp(prefix="mp-demo-", dir="/var/tmp"))
        os.chmod(base, 0o755)
        request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    else:
        base = tmp_path  # pytest's folders are 0700
    d = base / "demo"
    proc = subprocess.Popen([str(MAILPROTOD), "--demo", str(d)], stderr=open(tmp_path / "demo.log", "wb"),
                            stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: all(port_accepts(port) for port in p.values()) or proc.poll() is not None, 30,
                 "the demo's ports")
        assert proc.poll() is None, (tmp_path / "demo.log").read_text()
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail").pw_uid
            uid = lambda: int(open(f"/proc/{proc.pid}/status").read().split("Uid:")[1].split()[0])
            if request.param == "open":
                wait_for(lambda: uid() == mail, 10, "the switch to the user mail")
            else:
                assert "keeps running as root" in (tmp_path / "demo.log").read_text()
                assert uid() == 0
        yield d, p
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log = (tmp_path / "demo.log").read_text(errors="replace")
        assert "Sanitizer" not in log and "runtime error" not in log, log


def test_quick_start_smtp_in_pop3_out(demo):
    d, p = demo
    assert (d / "mailprotod.conf").exists() and (d / "cert.pem").exists() and (d / "users").exists()
    body = f"Subject: quick start {time.time()}\r\n\r\nHello Alice.\r\n".encode()
    ctx = ssl.create_default_context(cafile=str(d / "cert.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", p["smtp"], timeout=20) as s:
        s.starttls(context=ctx)
        s.sendmail("bob@remote.example", [USER], body)
    with smtplib.SMTP("127.0.0.1", p["submission"], timeout=20) as s:
        s.starttls(context=ctx)
        s.login(USER, PASSWORD)
        s.sendmail(USER, [USER], body.replace(b"Alice.", b"myself."))
    pop = poplib.POP3_SSL("127.0.0.1", p["pop3s"], context=ctx, timeout=20)
    try:
        pop.user(USER)
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        assert count == 2
        got = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in (1, 2)]
        assert any(m.endswith(body) for m in got), got
        assert any(m.endswith(body.replace(b"Alice.", b"myself.")) for m in got), got
    finally:
        pop.quit()
