"""The same handler .so files inside Apache httpd 2.4 (Debian's apache2, event MPM), through
mod_mailproto: one httpd serves a web page and mail protocols on different ports at once."""
import urllib.request

import pytest

from conftest import LineClient, Listener, port_accepts, wait_for
from httpdenv import Httpd, modules_dir

def echo_httpd(h, globals_=None):
    """An echo handler on a STARTTLS and an implicit-TLS virtual host; globals_: the global Mailproto* lines
    (default: MailprotoLoad of the built mod_echo.so)."""
    h.echo_port, h.tls_port = h.ports_for_echo
    h.write(globals_ or [f"MailprotoLoad echo {modules_dir() / 'mod_echo.so'}"],
            [(h.echo_port, ["MailprotoProtocol echo", "MailprotoTLS starttls"]),
             (h.tls_port, ["MailprotoProtocol echo", "MailprotoTLS implicit"])], extra=h.extra)
    return h


@pytest.fixture
def httpd(tls_cert, free_port):
    h = Httpd(tls_cert[0], tls_cert[1], free_port)
    h.ports_for_echo = (free_port(), free_port())
    h.extra = ""
    yield h
    h.stop()


def test_web_and_mail_from_one_httpd(httpd, tls_ctx):
    echo_httpd(httpd)
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
    echo_httpd(httpd)
    httpd.start()
    with LineClient.connect(httpd.echo_port) as c:
        c.send("STARTTLS\r\nINJECTED\r\n")
        assert c.readline() == "+OK begin TLS"
        c.starttls(tls_ctx)
        assert c.cmd("after") == "+OK echo: after"
        c.send("QUIT\r\n")
        assert c.read_until_eof() == ["+OK bye"]


def test_session_survives_graceful_restart(httpd):
    echo_httpd(httpd)
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
    echo_httpd(httpd)
    httpd.start()
    port = free_port()
    echo_so = modules_dir() / "mod_echo.so"
    srv = make_server([Listener(port)], ModuleDir=str(echo_so.parent)).start()
    # Both load the same mod_echo.so file: mailprotod's status and httpd's log name it.
    assert srv.modules()[1]["file"] == str(echo_so)
    assert f"loaded from {echo_so}" in httpd.log()
    with LineClient.connect(port) as a, LineClient.connect(httpd.echo_port) as b:
        assert a.cmd("same") == b.cmd("same") == "+OK echo: same"


def test_module_dir_and_quoted_paths(httpd):
    """A relative MailprotoLoad file is found in MailprotoModuleDir, whose path may be quoted."""
    h = echo_httpd(httpd, [f'MailprotoModuleDir "{modules_dir()}"', "MailprotoLoad echo mod_echo.so"])
    h.start()
    with LineClient.connect(h.echo_port) as c:
        assert c.cmd("from ModuleDir") == "+OK echo: from ModuleDir"
        c.quit()


def test_state_dir_of_root_serves_children(httpd):
    """MailprotoStateDir owned by root (httpd starts as root): the parent gives the children, which run as
    httpd's User, their own folder for handler copies, and they serve mail."""
    import os
    import pwd
    if os.geteuid() != 0:
        pytest.skip("needs root")
    state = httpd.root / "mail state"
    state.mkdir()
    os.chmod(state, 0o755)
    h = echo_httpd(httpd, [f"MailprotoLoad echo {modules_dir() / 'mod_echo.so'}", f'MailprotoStateDir "{state}"'])
    h.start()
    with LineClient.connect(h.echo_port) as c:
        assert c.cmd("child as www-data") == "+OK echo: child as www-data"
        c.quit()
    run = pwd.getpwnam("www-data")
    assert (state / f"modules.{run.pw_uid}").stat().st_uid == run.pw_uid
    assert state.stat().st_uid == 0


def test_bad_mail_configuration_stops_httpd_start(httpd):
    httpd.extra = "MailprotoDirective NoSuchDirective 1"
    echo_httpd(httpd)
    r = httpd.ctl("-k", "start", check=False)
    log = httpd.log()
    assert r.returncode != 0 or "unknown directive 'NoSuchDirective'" in log, (r.stderr, log)
    assert "unknown directive 'NoSuchDirective'" in log + r.stderr
    assert not port_accepts(httpd.echo_port)
    assert not port_accepts(httpd.http_port)


def test_web_page_and_smtp_delivery_at_once(free_port, tls_cert, request):
    """One httpd: an HTTP page on one port while an SMTP session on another delivers into the store."""
    import smtplib
    from smtpenv import check_delivered, message, start_smtp_httpd
    env = start_smtp_httpd(tls_cert, free_port, request)
    with smtplib.SMTP("127.0.0.1", env.mx, local_hostname="client.example", timeout=20) as s:
        s.ehlo()
        page = urllib.request.urlopen(f"http://127.0.0.1:{env.srv.http_port}/", timeout=10).read()
        assert page == b"hello from httpd\n"
        body = message("web and mail")
        s.sendmail("someone@remote.example", ["alice@example.test"], body)
    [stored] = env.wait_messages("alice@example.test", 1)
    check_delivered(stored, "someone@remote.example", body, with_="ESMTP", for_="alice@example.test")
