// Drives the real @anycable/core client (ext protocol, `ws`) for tests/rpc: one cable,
// one "chat" subscription, controlled over stdio with JSON lines.
//
//   argv: <url> <room>
//   stdout events: {"event":"connect","restored":bool,"reconnect":bool}, {"event":"subscribed"},
//                  {"event":"message","data":...}, {"event":"disconnect","reason":...},
//                  {"event":"log","level","msg"}
//   stdin commands: {"cmd":"cut"}            terminate the socket (the client reconnects with its sid)
//                   {"cmd":"perform","action":"count"}
//                   {"cmd":"exit"}
import readline from "node:readline";

import { BaseLogger, createCable } from "@anycable/core";
import WebSocket from "ws";

const [url, room] = process.argv.slice(2);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class EventLogger extends BaseLogger {
  writeLogEntry(level, msg) {
    emit({ event: "log", level, msg: String(msg) });
  }
}

const cable = createCable(url, {
  protocol: "actioncable-v1-ext-json",
  websocketImplementation: WebSocket,
  reconnectStrategy: () => 100,
  logger: new EventLogger("warn"),
});
cable.on("connect", (ev) => emit({ event: "connect", restored: !!ev.restored, reconnect: !!ev.reconnect }));
cable.on("disconnect", (ev) => emit({ event: "disconnect", reason: ev ? ev.reason || null : null }));

const channel = cable.subscribeTo("chat", { room });
channel.on("message", (data) => emit({ event: "message", data }));
channel.ensureSubscribed().then(
  () => emit({ event: "subscribed" }),
  (err) => emit({ event: "subscribe_failed", reason: err ? String(err.message) : null }),
);

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const cmd = JSON.parse(line);
  if (cmd.cmd === "cut") cable.transport.ws.terminate();
  else if (cmd.cmd === "perform") await channel.perform(cmd.action, cmd.data || {});
  else if (cmd.cmd === "exit") {
    cable.disconnect();
    process.exit(0);
  }
});
process.stdin.on("end", () => process.exit(0));
