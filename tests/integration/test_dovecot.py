"""Maildir interoperability with Dovecot (Debian's dovecot-imapd, started here on a loopback port over the
same Maildir): Dovecot reads what mod_maildir wrote (messages, flags, keywords, folders), and mod_maildir
reads what Dovecot wrote. mod_maildir is driven through store.h by tests/tools/store_tool."""
import hashlib
import imaplib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BUILD, port_accepts, wait_for

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
STORE_TOOL = BUILD / "tests" / "store_tool"
MOD_MAILDIR = BUILD / "modules" / "mod_maildir.so"
USER, PASSWORD = "alice@example.test", "wonderland"
MAIL_USER = "mail"   # Dovecot never accesses mail as root


class Interop:
    def __init__(self, port):
        self.dir = Path(tempfile.mkdtemp(prefix="mp-dovecot-"))
        os.chmod(self.dir, 0o755)
        self.port = port
        self.pw = pwd.getpwnam(MAIL_USER)
        (self.dir / "mail").mkdir()
        (self.dir / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        for sub in ("run", "state"):
            (self.dir / sub).mkdir()
        conf = self.dir / "dovecot.conf"
        conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = mp-interop-{port}
log_path = {self.dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{self.dir}/mail/%d/%n
mail_uid = {self.pw.pw_uid}
mail_gid = {self.pw.pw_gid}
first_valid_uid = {self.pw.pw_uid}
last_valid_uid = {self.pw.pw_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.dir}/users
}}
userdb {{
  driver = static
  args = uid={self.pw.pw_uid} gid={self.pw.pw_gid} home={self.dir}/mail/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.conf = conf
        self.proc = None

    def start(self):
        self.give_to_mail_user()
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "dovecot.stderr", "wb"))
        wait_for(lambda: port_accepts(self.port) or self.proc.poll() is not None, 30, "dovecot to listen")
        assert self.proc.poll() is None, self.log()

    def log(self):
        return "".join(p.read_text(errors="replace") for p in (self.dir / "dovecot.log", self.dir / "dovecot.stderr")
                       if p.exists())

    def give_to_mail_user(self):
        for root, dirs, files in os.walk(self.dir / "mail"):
            for n in dirs + files:
                os.chown(os.path.join(root, n), self.pw.pw_uid, self.pw.pw_gid)
        os.chown(self.dir / "mail", self.pw.pw_uid, self.pw.pw_gid)

    def tool(self, *args, stdin=None):
        r = subprocess.run([str(STORE_TOOL), str(MOD_MAILDIR), "mail/%d/%n", str(self.dir), USER, *args],
                           input=stdin, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        self.give_to_mail_user()
        return r.stdout.decode()

    def dump(self):
        return {f["name"]: f for f in json.loads(self.tool("dump"))["folders"]}

    def imap(self):
        m = imaplib.IMAP4("127.0.0.1", self.port, timeout=20)
        m.login(USER, PASSWORD)
        return m

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def interop(free_port):
    for path, what in ((DOVECOT, "dovecot-imapd"), (STORE_TOOL, "store_tool"), (MOD_MAILDIR, "mod_maildir.so")):
        if not os.path.exists(path):
            pytest.fail(f"needs {what} ({path})")
    i = Interop(free_port())
    yield i
    i.stop()


MSG1 = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\n\r\nfirst body\r\n.line with a dot\r\n"
MSG2 = b"Subject: two\r\n\r\n" + b"x" * 5000 + b"\r\nend\r\n"
MSG3 = "Subject: =?utf-8?q?drei?=\r\n\r\nGr\u00fc\u00dfe\r\n".encode()


def fetch_all(m, folder):
    typ, _ = m.select(f'"{folder}"', readonly=True)
    assert typ == "OK", folder
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    assert typ == "OK"
    out = {}
    for item in data:
        if isinstance(item, tuple):
            meta = item[0].decode()
            uid = int(meta.split("UID ")[1].split()[0])
            # \Recent is Dovecot's own session state: new to Dovecot, not a stored flag.
            flags = [f for f in meta.split("FLAGS (")[1].split(")")[0].split() if f != "\\Recent"]
            out[uid] = (sorted(flags), item[1])
    return out


def test_dovecot_reads_what_mod_maildir_wrote(interop):
    interop.tool("save", "INBOX", "Seen,Flagged", stdin=MSG1)
    interop.tool("save", "INBOX", "-", stdin=MSG2)
    interop.tool("create", "Work/Projects")
    interop.tool("save", "Work/Projects", "Answered,$Important", stdin=MSG3)
    interop.tool("create", "Entwürfe")
    interop.start()
    m = interop.imap()
    typ, data = m.list()
    names = sorted(line.decode().rsplit(" ", 1)[1].strip('"') for line in data)
    # Dovecot shows non-ASCII names in modified UTF-7 (RFC 3501 5.1.3), as we store them.
    assert names == sorted(["INBOX", "Work", "Work/Projects", "Entw&APw-rfe"]), names
    inbox = fetch_all(m, "INBOX")
    assert [v[1] for v in inbox.values()] == [MSG1, MSG2]
    assert [v[0] for v in inbox.values()] == [["\\Flagged", "\\Seen"], []]
    proj = fetch_all(m, "Work/Projects")
    assert list(proj.values()) == [(["$Important", "\\Answered"], MSG3)]
    m.logout()


def test_mod_maildir_reads_what_dovecot_wrote(interop):
    interop.tool("create", "Placeholder")   # makes the user's Maildir, as a delivery would
    interop.start()
    m = interop.imap()
    assert m.create("Archive/2026")[0] == "OK"
    assert m.create("Entw&APw-rfe")[0] == "OK"
    assert m.append("INBOX", "(\\Seen $Work)", None, MSG1)[0] == "OK"
    assert m.append("INBOX", None, None, MSG2)[0] == "OK"
    assert m.append("Archive/2026", "(\\Flagged)", None, MSG3)[0] == "OK"
    m.select("INBOX")
    assert m.uid("STORE", "2", "+FLAGS", "(\\Answered)")[0] == "OK"
    m.logout()
    interop.proc.terminate()
    interop.proc.wait(timeout=20)

    folders = interop.dump()
    assert {"INBOX", "Archive", "Archive/2026", "Entwürfe"} <= set(folders), list(folders)
    inbox = folders["INBOX"]["messages"]
    assert len(inbox) == 2
    # Dovecot stored LF line ends; the store streams CRLF and counts CRLF octets, byte for byte the original.
    assert [msg["sha256"] for msg in inbox] == [hashlib.sha256(MSG1).hexdigest(), hashlib.sha256(MSG2).hexdigest()]
    assert [msg["size"] for msg in inbox] == [len(MSG1), len(MSG2)]
    assert [msg["read"] for msg in inbox] == [len(MSG1), len(MSG2)]
    assert inbox[0]["flags"] == ["Seen"] and inbox[0]["keywords"] == ["$Work"]
    assert inbox[1]["flags"] == ["Answered"] and inbox[1]["keywords"] == []
    assert inbox[0]["uid"] < inbox[1]["uid"]
    arch = folders["Archive/2026"]["messages"]
    assert [(a["flags"], a["sha256"]) for a in arch] == [(["Flagged"], hashlib.sha256(MSG3).hexdigest())]


def test_round_trip_keeps_flags_changed_on_either_side(interop):
    interop.tool("save", "INBOX", "-", stdin=MSG1)
    interop.start()
    m = interop.imap()
    m.select("INBOX")
    typ, data = m.uid("SEARCH", "ALL")
    uid = data[0].split()[0].decode()
    assert m.uid("STORE", uid, "+FLAGS", "(\\Seen \\Deleted)")[0] == "OK"
    m.logout()
    interop.proc.terminate()
    interop.proc.wait(timeout=20)
    msg = interop.dump()["INBOX"]["messages"][0]
    assert sorted(msg["flags"]) == ["Deleted", "Seen"]
    assert msg["sha256"] == hashlib.sha256(MSG1).hexdigest()
