// The reference Durable Streams server (@durable-streams/server), in memory, for bench/ds_bench.py.
// Usage: node ref_server.mjs <port> <long-poll timeout ms>; prints its URL once listening.
import { DurableStreamTestServer } from "@durable-streams/server"

const [, , port, timeout] = process.argv
const server = new DurableStreamTestServer({
  port: Number(port), host: "127.0.0.1", longPollTimeout: Number(timeout), compression: false,
})
console.log(await server.start())
process.on("SIGTERM", async () => { await server.stop(); process.exit(0) })
