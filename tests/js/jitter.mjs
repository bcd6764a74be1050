// Jitter scenario: many @anycable/core cables on one stream; while jitter is on,
// each client cuts its own socket (ws.terminate(), no close handshake) at random
// every few seconds and stays offline for about a second before reconnecting.
// The Python side broadcasts messages {"seq": n} and then asks for a per-client report.
//
// Config (argv[2] JSON): { url, stream, clients, batch,
//   cutEveryMs: [min, max], outageMs: [min, max], finishTimeoutMs }
//
// Commands: {"cmd":"start_jitter"}, {"cmd":"finish","expected":N}, {"cmd":"exit"}
// Events: started, progress, ready, subscribe_failed, jitter_started, result
import { BaseLogger } from '@anycable/core'
import { emit, readConfig, makeCable, onLines, installCrashHandlers, reasonOf } from './lib.mjs'

installCrashHandlers()

let config = readConfig()
let total = config.clients || 200
let batch = config.batch || 25
let [cutMin, cutMax] = config.cutEveryMs || [2000, 5000]
let [outMin, outMax] = config.outageMs || [800, 1200]
let finishTimeoutMs = config.finishTimeoutMs || 10000

const rand = (a, b) => a + Math.random() * (b - a)

class CountingLogger extends BaseLogger {
  constructor(rec) {
    super('error')
    this.rec = rec
  }

  writeLogEntry(level, msg) {
    this.rec.errors.push(String(msg))
  }
}

let clients = []
let jitterOn = false

function makeClient(i) {
  let rec = {
    i,
    seqs: [],
    offsets: [],
    epochs: new Set(),
    cuts: 0,
    restored: 0,
    fresh: 0,
    disconnects: 0,
    errors: [],
    infos: [],
    subscribed: false,
    timer: null
  }
  let { cable, state, terminate } = makeCable(
    { ...config, name: `j${i}`, reconnectDelay: 100 },
    { quiet: true, client: `j${i}`, logger: new CountingLogger(rec) }
  )
  rec.cable = cable
  rec.state = state
  rec.terminate = terminate
  cable.on('connect', ev => {
    if (ev.reconnect) {
      if (ev.restored) rec.restored++
      else rec.fresh++
    }
    state.reconnectDelay = 100
  })
  cable.on('disconnect', () => rec.disconnects++)
  let channel = cable.streamFrom(config.stream)
  channel.on('message', (msg, meta) => {
    rec.seqs.push(msg && typeof msg === 'object' ? msg.seq : msg)
    if (meta) {
      rec.offsets.push(meta.offset)
      rec.epochs.add(meta.epoch)
    } else {
      rec.offsets.push(null)
    }
  })
  channel.on('info', ev => rec.infos.push(ev.type))
  rec.ready = channel.ensureSubscribed().then(
    () => {
      rec.subscribed = true
    },
    err => {
      emit({ event: 'subscribe_failed', client: i, reason: reasonOf(err), message: String(err && err.message) })
    }
  )
  return rec
}

function scheduleCut(rec) {
  rec.timer = setTimeout(() => {
    if (!jitterOn) return
    if (rec.cable.state === 'connected') {
      rec.state.reconnectDelay = rand(outMin, outMax)
      if (rec.terminate()) rec.cuts++
    }
    scheduleCut(rec)
  }, rand(cutMin, cutMax))
}

function summary(rec, expected) {
  let seen = new Set()
  let dups = 0
  let outOfOrder = 0
  let prev = 0
  for (let s of rec.seqs) {
    if (seen.has(s)) dups++
    seen.add(s)
    if (!(s > prev)) outOfOrder++
    if (s > prev) prev = s
  }
  let missing = []
  for (let n = 1; n <= expected; n++) if (!seen.has(n)) missing.push(n)
  let offsetViolations = 0
  for (let k = 1; k < rec.offsets.length; k++) {
    let a = rec.offsets[k - 1]
    let b = rec.offsets[k]
    if (a === null || b === null || b !== a + 1) offsetViolations++
  }
  return {
    i: rec.i,
    received: rec.seqs.length,
    unique: seen.size,
    dups,
    outOfOrder,
    missing: missing.slice(0, 10),
    missingCount: missing.length,
    offsetViolations,
    epochs: rec.epochs.size,
    cuts: rec.cuts,
    restored: rec.restored,
    fresh: rec.fresh,
    disconnects: rec.disconnects,
    infos: rec.infos,
    errors: rec.errors.slice(0, 5),
    cableState: rec.cable.state,
    firstSeqs: rec.seqs.slice(0, 5)
  }
}

async function finish(expected) {
  jitterOn = false
  for (let rec of clients) clearTimeout(rec.timer)
  let deadline = Date.now() + finishTimeoutMs
  const done = () => clients.every(r => new Set(r.seqs).size >= expected && r.cable.state === 'connected')
  while (!done() && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 100))
  }
  // Give late duplicates a chance to show up.
  await new Promise(r => setTimeout(r, 500))
  let per = clients.map(r => summary(r, expected))
  let totals = {
    clients: per.length,
    complete: per.filter(p => p.missingCount === 0).length,
    dups: per.reduce((a, p) => a + p.dups, 0),
    outOfOrder: per.reduce((a, p) => a + p.outOfOrder, 0),
    missing: per.reduce((a, p) => a + p.missingCount, 0),
    offsetViolations: per.reduce((a, p) => a + p.offsetViolations, 0),
    cuts: per.reduce((a, p) => a + p.cuts, 0),
    restored: per.reduce((a, p) => a + p.restored, 0),
    fresh: per.reduce((a, p) => a + p.fresh, 0),
    errors: per.reduce((a, p) => a + p.errors.length, 0)
  }
  let bad = per.filter(
    p => p.dups || p.outOfOrder || p.missingCount || p.offsetViolations || p.errors.length
  )
  emit({ event: 'result', expected, totals, bad: bad.slice(0, 10), badCount: bad.length })
}

onLines(async cmd => {
  switch (cmd.cmd) {
    case 'start_jitter':
      jitterOn = true
      for (let rec of clients) scheduleCut(rec)
      emit({ event: 'jitter_started' })
      break
    case 'finish':
      await finish(cmd.expected)
      break
    case 'exit':
      jitterOn = false
      for (let rec of clients) {
        clearTimeout(rec.timer)
        rec.cable.disconnect()
      }
      emit({ event: 'bye' })
      setTimeout(() => process.exit(0), 50)
      break
    default:
      emit({ event: 'error', message: 'unknown command ' + cmd.cmd })
  }
})

emit({ event: 'started', clients: total })

for (let start = 0; start < total; start += batch) {
  let group = []
  for (let i = start; i < Math.min(total, start + batch); i++) {
    let rec = makeClient(i)
    clients.push(rec)
    group.push(rec.ready)
  }
  await Promise.all(group)
  emit({ event: 'progress', subscribed: clients.filter(r => r.subscribed).length })
}

let ok = clients.filter(r => r.subscribed).length
emit({ event: 'ready', subscribed: ok, clients: total })
