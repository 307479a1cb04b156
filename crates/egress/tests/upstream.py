"""Upstream servers for the egress proxy tests.

    upstream.py http NAME BIND            plain HTTP, answers who it is and what it saw
    upstream.py tls NAME BIND CERT KEY    the same over TLS, also reporting the SNI
    upstream.py silent BIND               accepts connections and never answers

Each binds port 0 on BIND, prints "port N" and then one "request ..." or "accepted"
line per event, flushing every line, until it is killed.
"""

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
                f"auth={self.headers.get('Authorization')} te={self.headers.get('Transfer-Encoding')}\n"
            )
            say("request " + text.strip())
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = answer

        def log_message(self, *args):
            pass

    return Handler


def serve_http(name, bind, tls=None):
    server = http.server.ThreadingHTTPServer((bind, 0), handler_for(name))
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
