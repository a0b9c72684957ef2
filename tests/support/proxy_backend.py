#!/usr/bin/env python3
"""An application backend for Rotor's proxy tests: answers Centrifugo proxy requests and
records every one it gets (path, headers, JSON body).

    proxy_backend.py PORT [TLS_PORT CERT KEY]

With TLS_PORT, CERT and KEY (PEM files) it also serves HTTPS on TLS_PORT (same handlers and
log; the test reads the log over plain HTTP).

POST /<event> (connect, refresh, subscribe, publish, sub_refresh, rpc) answers from the script
set for that event, else with the default below. POST /_script with
{"event": "connect", "status": 200, "body": {...}, "delay_ms": 0} sets a script (an event with
no other key removes it); GET /_log returns what was recorded, POST /_reset forgets it.
With BACKEND_IDLE_TIMEOUT=S in the environment a kept-alive connection idle for S seconds is
closed, and the close of a connection that carried proxy requests is logged as event
"_closed" with the events it "served".
"""
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
LOG = []
SCRIPTS = {}


def default_answer(event, req, headers):
    if event == "connect":
        cookie = headers.get("cookie", "")
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "session" and value:
                return {"result": {"user": value}}
        data = req.get("data") or {}
        if isinstance(data, dict) and data.get("user"):
            return {"result": {"user": data["user"]}}
        return {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    if event in ("refresh", "sub_refresh"):
        return {"result": {"expire_at": int(time.time()) + 3600}}
    if event == "subscribe":
        if "forbidden" in req.get("channel", ""):
            return {"error": {"code": 403, "message": "forbidden"}}
        return {"result": {}}
    if event == "publish":
        return {"result": {"data": {"input": req.get("data"), "sanitized": True}}}
    if event == "rpc":
        return {"result": {"data": {"method": req.get("method"), "echo": req.get("data")}}}
    return {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = float(os.environ["BACKEND_IDLE_TIMEOUT"]) if "BACKEND_IDLE_TIMEOUT" in os.environ else None

    def handle(self):
        self.served = []
        super().handle()
        if self.served:
            with LOCK:
                LOG.append({"event": "_closed", "served": self.served})

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                return self.answer(200, LOG)
        self.answer(404, {})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        body = json.loads(raw) if raw else {}
        if self.path == "/_script":
            with LOCK:
                event = body.pop("event")
                if body:
                    SCRIPTS[event] = body
                else:
                    SCRIPTS.pop(event, None)
            return self.answer(200, {})
        if self.path == "/_reset":
            with LOCK:
                LOG.clear()
            return self.answer(200, {})
        event = self.path.strip("/").split("/")[-1]
        self.served.append(event)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            LOG.append({"event": event, "headers": headers, "body": body})
            script = SCRIPTS.get(event)
        if script is None:
            return self.answer(200, default_answer(event, body, headers))
        if script.get("delay_ms"):
            time.sleep(script["delay_ms"] / 1000.0)
        self.answer(script.get("status", 200), script.get("body", {}))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048


if __name__ == "__main__":
    if len(sys.argv) > 4:
        tls = Server(("127.0.0.1", int(sys.argv[2])), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
