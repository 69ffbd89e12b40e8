#!/usr/bin/env python3
"""Idle-session memory and reload time of mailprotod (issue 2's figures). Not a test: it prints numbers.

    tests/bench/idle_and_reload.py [--build build] [--sessions 1000,5000,10000]

Starts mailprotod with the echo handler on two loopback ports (plain and implicit TLS), measures the
process's RSS when idle, after N open idle sessions of each kind, and the wall time of `-s reload`
(unchanged modules, and with a changed module that loads as a new generation).
"""
import argparse, os, resource, shutil, socket, ssl, statistics, subprocess, sys, tempfile, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def wait_port(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")

def open_sessions(port, n, tls_ctx=None):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls_ctx:
            s = tls_ctx.wrap_socket(s)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(100)
            if not chunk:
                sys.exit("server closed a session")
            buf += chunk
        socks.append(s)
    return socks

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "..", "build"))
    ap.add_argument("--sessions", default="1000,5000,10000")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    counts = [int(x) for x in args.sessions.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < max(counts) + 100:
        sys.exit(f"the descriptor limit ({hard}) is too low for {max(counts)} sessions")

    tmp = tempfile.mkdtemp(prefix="mp-bench-")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", f"{tmp}/key.pem",
                        "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)
        os.mkdir(f"{tmp}/modules")
        shutil.copy(f"{build}/modules/mod_echo.so", f"{tmp}/modules/mod_echo.so")
        plain, tlsport = free_port(), free_port()
        conf = f"{tmp}/mailprotod.conf"
        with open(conf, "w") as f:
            f.write(f"""ModuleDir modules
LoadModule echo mod_echo.so
StateDir state
TLSCertificateFile cert.pem
TLSCertificateKeyFile key.pem
LogLevel warn
MaxConnections 100000
MaxConnectionsPerClient 100000
<Listen 127.0.0.1:{plain}>
    Protocol echo
</Listen>
<Listen 127.0.0.1:{tlsport}>
    Protocol echo
    TLS implicit
</Listen>
""")
        srv = subprocess.Popen([f"{build}/mailprotod", "-c", conf], stderr=open(f"{tmp}/log", "w"))
        wait_port(plain)
        wait_port(tlsport)
        time.sleep(0.5)  # let the two probe sessions end before the baseline
        base = rss_kib(srv.pid)
        print(f"idle process RSS: {base / 1024:.1f} MiB")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for label, port, tctx in (("plain", plain, None), ("TLS", tlsport, ctx)):
            for n in counts:
                before = rss_kib(srv.pid)
                socks = open_sessions(port, n, tctx)
                after = rss_kib(srv.pid)
                print(f"{n:6d} idle {label:5s} echo sessions: RSS +{(after - before) / 1024:.1f} MiB, "
                      f"{(after - before) / n * 1000 / 1024:.2f} MiB per 1,000 sessions")
                for s in socks:
                    s.close()
                time.sleep(1)
        # Reload time: the wall time of `mailprotod -s reload` until it answered.
        def reload():
            t = time.monotonic()
            subprocess.run([f"{build}/mailprotod", "-c", conf, "-s", "reload"], check=True, capture_output=True)
            return (time.monotonic() - t) * 1000
        same = [reload() for _ in range(20)]
        changed = []
        for _ in range(10):
            shutil.copy(f"{build}/modules/mod_echo.so", f"{tmp}/modules/mod_echo.so.new")
            os.replace(f"{tmp}/modules/mod_echo.so.new", f"{tmp}/modules/mod_echo.so")
            changed.append(reload())
        print(f"reload, modules unchanged: median {statistics.median(same):.1f} ms (20 runs)")
        print(f"reload, mod_echo.so replaced (new generation): median {statistics.median(changed):.1f} ms (10 runs)")
        srv.terminate()
        srv.wait(timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
