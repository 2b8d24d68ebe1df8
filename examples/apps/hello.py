#!/usr/bin/env python3
"""The quickstart's app: a tiny HTTP server that answers with the name of its pod.

Listens on $PORT (shoal's process driver hands each declared containerPort a free host port
and passes the first one as PORT). Standard library only, so it runs with any python3.
"""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POD = os.environ.get("SHOAL_POD_NAME") or os.environ.get("HOSTNAME") or "unknown"
PORT = int(os.environ.get("PORT", "8080"))


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n" if self.path == "/healthz" else f"hello from {POD}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {fmt % args}\n")
        sys.stdout.flush()


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Hello)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{POD} listening on :{PORT}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
