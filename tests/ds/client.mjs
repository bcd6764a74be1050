// Drives the real @durable-streams/client against a pycable server (tests/ds/test_clients.py).
// Usage: node client.mjs <stream url> <mode: catch-up | long-poll | sse> <n>
// Reads the stream from -1 in <mode> until <n> JSON items arrived, printing one JSON line per
// batch ({items, offset, upToDate}) and "ready" once the first response came in.
import { stream } from "@durable-streams/client"

const [, , url, mode, count] = process.argv
const want = Number(count)
const live = mode === "catch-up" ? false : mode
const res = await stream({ url, offset: "-1", live })
console.log("ready")
if (live === false) {
  const items = await res.json()
  console.log(JSON.stringify({ items, offset: res.offset, upToDate: res.upToDate }))
  process.exit(0)
}
let seen = 0
const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: `timed out after ${seen} items` }))
  process.exit(2)
}, 20000)
res.subscribeJson(async (batch) => {
  seen += batch.items.length
  console.log(JSON.stringify({ items: batch.items, offset: batch.offset, upToDate: batch.upToDate }))
  if (seen >= want) {
    clearTimeout(timer)
    res.cancel()
    process.exit(0)
  }
})
