"""Upstream servers for the egress proxy tests.

    upstream.py http NAME BIND            plain HTTP, answers who it is and what it saw
    upstream.py tls NAME BIND CERT KEY    the same over TLS, also reporting the SNI
    upstream.py silent BIND               accepts connections and never answers

Paths starting with /echo-headers answer with the request's whole head (an echo of every
header): /echo-headers-gzip gzips it when the request's Accept-Encoding asks for gzip,
/echo-headers-gzip-always gzips it whatever was asked, /echo-headers-chunk7 sends it
chunked in 7-byte chunks.

Each binds port 0 on BIND (or PORT, for BIND#PORT), prints "port N" and then one "request ..." or "accepted"
line per event, flushing every line, until it is killed.
"""

import gzip
import http.server
import socket
import ssl
import sys
import threading


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def handler_for(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            sni = getattr(self.connection, "nc_sni", None)
            text = (
                f"upstream={name} method={self.command} path={self.path} "
                f"host={self.headers.get('Host')} sni={sni} body={body.decode(errors='replace')} "
                f"auth={self.headers.get('Authorization')} te={self.headers.get('Transfer-Encoding')} "
                f"ae={self.headers.get('Accept-Encoding')} rid={self.headers.get('X-Request-Id')}\n"
            )
            say("request " + text.strip())
            data = text.encode()
            if self.path.startswith("/echo-headers"):
                self.echo_headers()
                return
            if self.path.startswith("/no-content"):
                self.send_response(204)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if self.path.startswith("/chunked-response"):
                # The answer in two chunks, with a trailer.
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Trailer", "X-Done")
                self.end_headers()
                if self.command != "HEAD":
                    half = len(data) // 2
                    for part in (data[:half], data[half:]):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\nX-Done: 1\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def echo_headers(self):
            data = f"{self.requestline}\n{self.headers}".encode()
            asked = self.headers.get("Accept-Encoding") or ""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            gzipped = self.path.startswith("/echo-headers-gzip-always") or (
                self.path.startswith("/echo-headers-gzip") and "gzip" in asked
            )
            if gzipped:
                data = gzip.compress(data)
                self.send_header("Content-Encoding", "gzip")
            if self.path.startswith("/echo-headers-chunk7"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for at in range(0, len(data), 7):
                    part = data[at : at + 7]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = answer

        def log_message(self, *args):
            pass

    return Handler


def serve_http(name, bind, tls=None):
    bind, _, port = bind.partition("#")
    server = http.server.ThreadingHTTPServer((bind, int(port or 0)), handler_for(name))
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)

        def remember_sni(sock, server_name, _context):
            sock.nc_sni = server_name

        context.sni_callback = remember_sni
        server.socket = context.wrap_socket(server.socket, server_side=True)
    say(f"port {server.server_address[1]}")
    server.serve_forever()


def serve_silent(bind):
    listener = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, 0))
    listener.listen(512)
    say(f"port {listener.getsockname()[1]}")
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)
        say("accepted")


def main():
    mode = sys.argv[1]
    if mode == "http":
        serve_http(sys.argv[2], sys.argv[3])
    elif mode == "tls":
        serve_http(sys.argv[2], sys.argv[3], tls=(sys.argv[4], sys.argv[5]))
    elif mode == "silent":
        serve_silent(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    threading.current_thread().name = "upstream"
    main()
