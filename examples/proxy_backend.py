#!/usr/bin/env python3
"""A minimal application backend for Rotor's proxies (Python standard library only).

    python3 examples/proxy_backend.py 3000

(port 0 picks a free one; the port is printed once the backend listens).

Rotor POSTs JSON to /centrifugo/<event>; this backend answers:
- connect: the user is the `session` cookie (a real app would look the session up), or the
  `X-Session` header an SDK sends with its `headers` option (Rotor forwards it when the
  proxy lists it in `emulated_headers`); neither -> disconnect 4501 (terminal: the SDK does
  not reconnect).
- subscribe: anything but channels containing "admin" is allowed.
- publish: the payload is passed on with the publisher's name added.
- rpc: `getCurrentYear` answers the year; other methods get error 1404.
"""
import datetime
import json
import sys
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def connect(req, cookies, headers):
    session = cookies.get("session")
    user = session.value if session is not None else headers.get("X-Session", "")
    if not user:
        return {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    return {"result": {"user": user, "info": {"name": user.title()}}}


def subscribe(req, cookies, headers):
    if "admin" in req["channel"]:
        return {"error": {"code": 403, "message": "permission denied"}}
    return {"result": {}}


def publish(req, cookies, headers):
    return {"result": {"data": {"text": (req.get("data") or {}).get("text"), "by": req["user"]}}}


def rpc(req, cookies, headers):
    if req["method"] == "getCurrentYear":
        return {"result": {"data": {"year": datetime.date.today().year}}}
    return {"error": {"code": 1404, "message": "unknown method"}}


HANDLERS = {"connect": connect, "subscribe": subscribe, "publish": publish, "rpc": rpc}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Rotor reuses its connections

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        handler = HANDLERS.get(self.path.rsplit("/", 1)[-1])
        if handler is None:
            self.send_error(404)
            return
        cookies = SimpleCookie(self.headers.get("Cookie", ""))
        answer = json.dumps(handler(json.loads(body), cookies, self.headers)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"proxy backend listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
