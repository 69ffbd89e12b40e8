"""`cmake --install` gives a third party everything to build a module: headers and mailproto.pc."""
import os
import subprocess
import textwrap

import pytest

from conftest import BUILD, LineClient, Listener


HELLO_C = textwrap.dedent(r'''
    #include <string.h>
    #include <mailproto/host.h>

    static int hello_connect(mp_session *s) { return s->host->printf(s, "hello from outside\r\n"); }

    static long hello_input(mp_session *s, const char *data, size_t len)
    {
        const char *nl = memchr(data, '\n', len);
        if (!nl)
            return 0;
        s->host->printf(s, "bye\r\n");
        s->host->close(s);
        return (long)(nl - data + 1);
    }

    static void hello_goodbye(mp_session *s, mp_goodbye why) { s->host->printf(s, "bye\r\n"); }

    static const mp_protocol hello_protocol = {
        .name = "hello", .on_connect = hello_connect, .on_input = hello_input, .on_goodbye = hello_goodbye,
    };

    MP_MODULE {
        MP_MODULE_HEADER, .name = "hello", .kind = MP_KIND_PROTOCOL, .version = "1",
        .protocol = &hello_protocol,
    };
''')


def test_third_party_module_builds_against_installed_headers(make_server, free_port, tmp_path):
    if not (BUILD / "CMakeCache.txt").exists():
        pytest.skip("no CMake build folder to install from")
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(prefix)], check=True, capture_output=True)
    pc_dirs = [p for p in prefix.rglob("mailproto.pc")]
    assert pc_dirs, "mailproto.pc not installed"
    assert (prefix / "include" / "mailproto" / "host.h").exists()
    installed = list(prefix.rglob("mailprotod"))
    assert installed, "mailprotod not installed"
    assert list(prefix.rglob("mod_echo.so")), "modules not installed"

    env = dict(os.environ, PKG_CONFIG_PATH=str(pc_dirs[0].parent))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "mailproto"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert any(str(prefix) in f for f in flags), flags
    src = tmp_path / "hello.c"
    src.write_text(HELLO_C)
    mods = tmp_path / "mods"
    mods.mkdir()
    so = mods / "mod_hello.so"
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(so), str(src)] + flags,
                   check=True, capture_output=True, text=True)
    # Only the descriptor is exported.
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], check=True, capture_output=True,
                          text=True).stdout
    assert "mp_module_descriptor" in syms
    assert "hello_input" not in syms

    port = free_port()
    srv = make_server([Listener(port, protocol="hello")], ModuleDir=str(mods), LoadModule="hello mod_hello.so")
    srv.start()
    with LineClient.connect(port) as c:
        assert c.greeting == "hello from outside"
        c.send("x\r\n")
        assert c.read_until_eof() == ["bye"]
