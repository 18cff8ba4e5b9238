#!/usr/bin/python3
"""Upstream servers for moat's end-to-end network tests.

Runs on the host's loopback, started by a test and stopped by itself: it
exits when its stdin closes (the test process went away) or after
--lifetime seconds, whichever comes first, so a crashed test leaves nothing
listening.

Modes:
  echo (default)  answers every request with one line of JSON describing
                  what arrived (method, path, headers, body length); GET
                  /bytes/N answers N bytes instead. Paths for the
                  credential-grant tests:
                  /reflect/...      the JSON description, and every request
                                    header echoed back as X-Reflect-<name>
                  /stream/N         a chunked body of N chunks of 1000
                                    bytes, each ending with the start of the
                                    request's Authorization value and the
                                    next one starting with its rest (the
                                    value straddles every chunk boundary)
                  /gzip             a gzip-compressed body
                                    (Content-Encoding: gzip) whatever the
                                    request's Accept-Encoding
  --git-root DIR  serves the bare repositories under DIR with
                  `git http-backend` (smart HTTP, push enabled per repo by
                  http.receivepack).
  --banner        not HTTP: a protocol where the server speaks first, as
                  SSH does. Sends a banner line, reads one line, answers it
                  upper-cased and closes.

With --cert/--key it speaks TLS. It prints `PORT=<n>` once it listens.
Every accepted connection and every request is appended as a JSON line to
--log, so a test can prove that something did or did not arrive.
"""

import argparse
import http.server
import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time

LOCK = threading.Lock()


def log_event(path, event):
    if not path:
        return
    line = json.dumps(event, sort_keys=True) + "\n"
    with LOCK:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls = None
    log_path = None
    git_root = None
    git_backend = None

    def finish_request(self, request, client_address):
        # The handshake runs here, in the connection's own thread, so a
        # client that stalls mid-handshake cannot block the accept loop.
        log_event(self.log_path, {"event": "connect", "peer": client_address[0]})
        request.settimeout(15)
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log_event(self.log_path, {"event": "tls-error", "error": str(e)})
                request.close()
                return
        super().finish_request(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "moat-test-server"

    def log_message(self, fmt, *args):
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_any(self):
        body = self.read_body()
        log_event(
            self.server.log_path,
            {
                "event": "request",
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": len(body),
            },
        )
        if self.server.git_root:
            self.git(body)
        else:
            self.echo(body)

    def send(self, status, ctype, payload, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def stream(self, n):
        value = (self.headers.get("Authorization") or "none").encode()
        half = len(value) // 2
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(n):
            head = value[half:] if i else b""
            tail = value[:half] if i < n - 1 else b"\n"
            chunk = head + b"." * (1000 - len(head) - len(tail)) + tail
            self.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def echo(self, body):
        if self.command == "GET" and self.path.startswith("/stream/"):
            self.stream(int(self.path[len("/stream/"):].split("?")[0]))
            return
        if self.path.startswith("/gzip"):
            import gzip

            payload = gzip.compress(json.dumps(
                {"headers": [[k, v] for k, v in self.headers.items()]}).encode())
            self.send(200, "application/json", payload, [("Content-Encoding", "gzip")])
            return
        if self.command == "GET" and self.path.startswith("/bytes/"):
            n = int(self.path[len("/bytes/"):].split("?")[0])
            self.send(200, "application/octet-stream", b"m" * n)
            return
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "tls": self.server.tls is not None,
        }
        extra = []
        if self.path.startswith("/reflect"):
            extra = [("X-Reflect-" + k, v) for k, v in self.headers.items()]
        self.send(200, "application/json", (json.dumps(seen) + "\n").encode(), extra)

    def git(self, body):
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.server.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "SERVER_PROTOCOL": "HTTP/1.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        proc = subprocess.run(
            [self.server.git_backend],
            input=body,
            env=env,
            capture_output=True,
            timeout=20,
            check=False,
        )
        out = proc.stdout
        sep = out.find(b"\r\n\r\n")
        sep_len = 4
        if sep < 0:
            sep = out.find(b"\n\n")
            sep_len = 2
        if sep < 0:
            msg = b"git http-backend failed: " + proc.stderr
            self.send(500, "text/plain", msg)
            return
        status = 200
        ctype = "application/octet-stream"
        extra = []
        for line in out[:sep].decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k.lower() == "content-type":
                ctype = v
            elif k.lower() not in ("content-length",):
                extra.append((k, v))
        self.send(status, ctype, out[sep + sep_len:], extra)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class BannerHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"SSH-2.0-moat-test-banner\r\n")
        self.wfile.flush()
        line = self.rfile.readline(4096)
        log_event(
            self.server.log_path,
            {"event": "request", "method": "LINE", "path": line.decode("latin-1").strip()},
        )
        self.wfile.write(line.upper())
        self.wfile.flush()


class BannerServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    log_path = None

    def finish_request(self, request, client_address):
        log_event(self.log_path, {"event": "connect", "peer": client_address[0]})
        request.settimeout(15)
        super().finish_request(request, client_address)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--log")
    p.add_argument("--git-root")
    p.add_argument("--lifetime", type=float, default=90)
    p.add_argument("--banner", action="store_true")
    a = p.parse_args()

    if a.banner:
        srv = BannerServer((a.bind, 0), BannerHandler)
    else:
        srv = Server((a.bind, 0), Handler)
    srv.log_path = a.log
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        srv.tls = ctx
    if a.git_root:
        srv.git_root = a.git_root
        exec_path = subprocess.run(
            ["git", "--exec-path"], capture_output=True, text=True, check=True
        ).stdout.strip()
        srv.git_backend = os.path.join(exec_path, "git-http-backend")

    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("PORT=%d" % srv.server_address[1], flush=True)

    def stdin_watch():
        # EOF: whoever started us is gone.
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=stdin_watch, daemon=True).start()
    time.sleep(a.lifetime)
    os._exit(0)


if __name__ == "__main__":
    main()
