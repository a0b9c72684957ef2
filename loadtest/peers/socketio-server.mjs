// Socket.IO 4 peer server for rotor-loadtest (`--target socketio`).
//
//   node socketio-server.mjs <port> [max-seconds]
//
// Listens on 127.0.0.1:<port> (0 = any free port) and prints `listening <port>` once ready.
// Clients (Engine.IO v4 over WebSocket only) join a room by emitting `subscribe` with the
// channel name and get `subscribed` back; `POST /publish` with a JSON body
// {"channel": "...", "data": <any JSON>} broadcasts `pub` with that data to the room and
// answers 200 `{"result":{}}`. The process exits when its stdin closes (the harness went
// away) or after max-seconds (default 900), whichever comes first.
import http from "node:http";
import { Server } from "socket.io";

const port = Number.parseInt(process.argv[2] ?? "0", 10);
const maxSeconds = Number.parseInt(process.argv[3] ?? "900", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`bad port ${process.argv[2]}`);
  process.exit(2);
}
const MAX_BODY = 1 << 20;

function answer(res, status, body) {
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
}

const httpServer = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/publish") {
    answer(res, 404, '{"error":"not found"}');
    return;
  }
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      answer(res, 413, '{"error":"too large"}');
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY) return;
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      answer(res, 400, '{"error":"bad json"}');
      return;
    }
    if (typeof msg?.channel !== "string") {
      answer(res, 400, '{"error":"channel missing"}');
      return;
    }
    io.to(msg.channel).emit("pub", msg.data);
    answer(res, 200, '{"result":{}}');
  });
});
// The harness publishes over a few long-lived keep-alive connections.
httpServer.keepAliveTimeout = 120_000;
httpServer.headersTimeout = 125_000;

const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: MAX_BODY,
});

io.on("connection", (socket) => {
  socket.on("subscribe", (channel) => {
    if (typeof channel !== "string") return;
    socket.join(channel);
    socket.emit("subscribed", channel);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});

function stop() {
  io.close();
  httpServer.close();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setTimeout(stop, maxSeconds * 1000).unref();
