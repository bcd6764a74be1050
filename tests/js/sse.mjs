// SSE scenario: WHATWG EventSource clients (the `eventsource` package) on one stream.
// A client's stream can be cut (the response body errors and its socket is closed, as a
// network drop would); EventSource then reconnects by itself, sending Last-Event-ID.
//
// Config (argv[2] JSON): { url, clients, cutEveryMs: [min, max] }
// Commands: {"cmd":"cut","i":N}, {"cmd":"start_jitter"}, {"cmd":"stop_jitter"},
//           {"cmd":"report"}, {"cmd":"exit"}
// Events: open {i, n}, message {i, seq, id}, cut {i, lastEventId}, failed {i, code, message},
//         ready, jitter_started, jitter_stopped, report {clients: [...]}
import { EventSource } from 'eventsource'
import { emit, readConfig, onLines, installCrashHandlers } from './lib.mjs'

installCrashHandlers()

const config = readConfig()
const total = config.clients || 1
const [cutMin, cutMax] = config.cutEveryMs || [2000, 5000]
const rand = (a, b) => a + Math.random() * (b - a)

// A fetch whose response body can be cut: the body errors (EventSource schedules a
// reconnect, as after a network error) and the real body is cancelled (its socket closes).
function cuttableFetch(rec) {
  return async (url, init) => {
    const res = await fetch(url, init)
    if (!res.body) return res
    const reader = res.body.getReader()
    const body = new ReadableStream({
      start(controller) {
        rec.cutNow = () => {
          try {
            controller.error(new Error('stream cut by the test'))
          } catch (e) {}
          reader.cancel().catch(() => {})
        }
        ;(async () => {
          try {
            for (;;) {
              const { done, value } = await reader.read()
              if (done) {
                controller.close()
                break
              }
              controller.enqueue(value)
            }
          } catch (e) {
            try {
              controller.error(e)
            } catch (e2) {}
          }
        })()
      },
      cancel() {
        reader.cancel().catch(() => {})
      },
    })
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers })
  }
}

const clients = []
let jitterOn = false
let readyEmitted = false

function makeClient(i) {
  const rec = { i, seqs: [], ids: [], opens: 0, cuts: 0, errors: [], cutNow: null, es: null, timer: null }
  const es = new EventSource(config.url, { fetch: cuttableFetch(rec) })
  rec.es = es
  es.addEventListener('open', () => {
    rec.opens += 1
    emit({ event: 'open', i, n: rec.opens })
    if (!readyEmitted && clients.every((c) => c.opens > 0)) {
      readyEmitted = true
      emit({ event: 'ready' })
    }
  })
  es.addEventListener('message', (e) => {
    let data
    try {
      data = JSON.parse(e.data)
    } catch (err) {
      data = e.data
    }
    const seq = data && typeof data === 'object' ? data.seq : data
    rec.seqs.push(seq)
    rec.ids.push(e.lastEventId)
    if (total === 1) emit({ event: 'message', i, seq, id: e.lastEventId })
  })
  for (const kind of ['reject_history', 'disconnect']) {
    es.addEventListener(kind, (e) => {
      rec.errors.push(`${kind}: ${e.data}`)
      emit({ event: kind, i, data: e.data })
    })
  }
  es.addEventListener('error', (e) => {
    if (es.readyState === es.CLOSED) {
      emit({ event: 'failed', i, code: e.code, message: e.message })
    }
  })
  return rec
}

function cut(rec) {
  if (rec.cutNow && rec.es.readyState === rec.es.OPEN) {
    rec.cuts += 1
    emit({ event: 'cut', i: rec.i, lastEventId: rec.ids[rec.ids.length - 1] || '' })
    rec.cutNow()
  }
}

function scheduleCut(rec) {
  rec.timer = setTimeout(() => {
    if (!jitterOn) return
    cut(rec)
    scheduleCut(rec)
  }, rand(cutMin, cutMax))
}

for (let i = 0; i < total; i++) clients.push(makeClient(i))

onLines((cmd) => {
  if (cmd.cmd === 'cut') {
    cut(clients[cmd.i || 0])
  } else if (cmd.cmd === 'start_jitter') {
    jitterOn = true
    clients.forEach(scheduleCut)
    emit({ event: 'jitter_started' })
  } else if (cmd.cmd === 'stop_jitter') {
    jitterOn = false
    clients.forEach((c) => clearTimeout(c.timer))
    emit({ event: 'jitter_stopped' })
  } else if (cmd.cmd === 'report') {
    emit({
      event: 'report',
      clients: clients.map((c) => ({ i: c.i, seqs: c.seqs, opens: c.opens, cuts: c.cuts, errors: c.errors, open: c.es.readyState === c.es.OPEN })),
    })
  } else if (cmd.cmd === 'exit') {
    clients.forEach((c) => c.es.close())
    process.exit(0)
  }
})

emit({ event: 'started' })
