// An AnyCable HTTP RPC application built on the real @anycable/serverless-js package.
//
// The RPC endpoints are POST /_anycable/{connect,command,disconnect} handled by the
// package's own `handler`; POST /_anycable/restore (the pycable extension) is answered
// here, since the package does not know it.
//
// The test harness (tests/rpc/apps.py) talks to this process over stdio, JSON lines:
//   stdout  {"listening": <port>}                 once, when the HTTP server is up
//           {"call": {"method", "sid", "protov", "auth", "body"}}   one per RPC request
//           {"ack": <n>}                          after a control command
//   stdin   {"cmd": "mode", "delay_ms": N, "http_status": S}        slow / failing answers
//
// The application: connections are identified by the `user` URL parameter (rejected
// without it). Channel "chat" (params: room) streams from "room:<room>", keeps
// {room, count} as its state and has actions: count, echo, leave (stop all streams),
// follow / unfollow (data.stream), kick (close the connection), setc / showc
// (connection state).
import http from "node:http";
import { register } from "node:module";
import readline from "node:readline";

// See resolve-dirs.mjs: the hook must be registered before the package is imported.
register("./resolve-dirs.mjs", import.meta.url);
const { Application, Channel, handler, Status } = await import("@anycable/serverless-js");

const secret = process.env.RPC_SECRET || "";
const quiet = Boolean(process.env.QUIET); // benchmarks: no call reports, no control
let mode = { delay_ms: 0, http_status: 200 };
let acks = 0;

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class CableApplication extends Application {
  async connect(handle) {
    const user = new URL(handle.env.url).searchParams.get("user");
    if (!user) {
      handle.reject();
      return;
    }
    handle.identifiedBy({ user });
    handle.env.cstate = { ...(handle.env.cstate || {}), user };
  }
}

class ChatChannel extends Channel {
  async subscribed(handle, params) {
    if (!params || !params.room) {
      handle.reject();
      return;
    }
    handle.streamFrom(`room:${params.room}`);
    handle.state = { room: params.room, count: 0 };
    handle.transmit({ hello: params.room, user: handle.identifiers.user });
  }

  async count(handle) {
    const count = (handle.state?.count || 0) + 1;
    handle.state = { ...handle.state, count };
    handle.transmit({ count });
  }

  async echo(handle, params, data) {
    handle.transmit({ echo: data.text });
  }

  async leave(handle) {
    handle.stopAllStreams();
  }

  async follow(handle, params, data) {
    handle.streamFrom(data.stream);
  }

  async unfollow(handle, params, data) {
    handle.stopStreamFrom(data.stream);
  }

  async kick(handle) {
    handle.transmit({ bye: true });
    handle.delegate.close();
  }

  async setc(handle, params, data) {
    handle.env.cstate = { ...(handle.env.cstate || {}), [data.key]: data.value };
  }

  async showc(handle) {
    handle.transmit({ cstate: handle.env.cstate || {} });
  }
}

const app = new CableApplication();
app.registerChannel("chat", new ChatChannel());

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks);
  const path = new URL(req.url, "http://localhost").pathname;
  const method = path.split("/").pop();
  const reply = (status, obj) => {
    const body = JSON.stringify(obj);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  };
  if (req.method !== "POST" || !path.startsWith("/_anycable/")) {
    reply(404, { error: "not found" });
    return;
  }
  let body = null;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch {
    body = raw.toString("utf8");
  }
  // The package's handler takes a Fetch API Request (as on Vercel / Next.js).
  const serve = () =>
    handler(
      new Request(`http://localhost${req.url}`, {
        method: "POST",
        headers: { "x-anycable-meta-sid": req.headers["x-anycable-meta-sid"] || "" },
        body: raw,
      }),
      app,
    );
  if (!quiet) {
    emit({
      call: {
        method,
        sid: req.headers["x-anycable-meta-sid"] || "",
        protov: req.headers["x-anycable-meta-protov"] || "",
        auth: req.headers["authorization"] || "",
        content_type: req.headers["content-type"] || "",
        body,
      },
    });
  }
  if (secret && req.headers["authorization"] !== `Bearer ${secret}`) {
    reply(401, { error: "unauthorized" });
    return;
  }
  if (mode.delay_ms) await sleep(mode.delay_ms);
  if (mode.http_status !== 200) {
    reply(mode.http_status, { error: "failing on purpose" });
    return;
  }
  if (method === "restore") {
    reply(200, { status: Status.SUCCESS });
    return;
  }
  try {
    reply(200, await serve());
  } catch (e) {
    reply(200, { status: Status.ERROR, error_msg: String(e) });
  }
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const msg = JSON.parse(line);
  if (msg.cmd === "mode") mode = { delay_ms: 0, http_status: 200, ...msg };
  emit({ ack: ++acks });
});
process.stdin.on("end", () => process.exit(0));

server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => emit({ listening: server.address().port }));
