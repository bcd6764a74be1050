// Drives the real @anycable/core client against one Action Cable channel of an application
// (tests/apps: the FastAPI and Django examples), controlled over stdio with JSON lines.
//
// Config (argv[2] JSON): { url, channel, params, headers, name, logLevel }
//   headers: sent with the WebSocket handshake (a Cookie header, as a browser would send it)
// Events: those of lib.mjs's makeCable (connect, disconnect, close, frame, sent, log…), and
//         session {sid}, subscribed,
//         subscribe_failed {reason}, message {data}, performed {action}, log, error.
// Commands: {"cmd":"perform","action":"x","data":{...}}, {"cmd":"exit"}
import { emit, readConfig, makeCable, onLines, installCrashHandlers, reasonOf } from './lib.mjs'

installCrashHandlers()

let config = readConfig()
if (config.headers) config.websocketOptions = { headers: config.headers }
let { cable, client } = makeCable(config)

// (makeCable reports connect, disconnect, close, frames and logs; `session` adds the sid.)
cable.on('connect', () => emit({ event: 'session', client, sid: cable.sessionId || null }))

let channel = cable.subscribeTo(config.channel, config.params || {})
channel.on('message', data => emit({ event: 'message', client, data }))
channel.ensureSubscribed().then(
  () => emit({ event: 'subscribed', client }),
  err => emit({ event: 'subscribe_failed', client, reason: reasonOf(err) })
)

onLines(async cmd => {
  if (cmd.cmd === 'perform') {
    await channel.perform(cmd.action, cmd.data || {})
    emit({ event: 'performed', client, action: cmd.action })
  } else if (cmd.cmd === 'exit') {
    cable.disconnect()
    setTimeout(() => process.exit(0), 20)
  } else {
    emit({ event: 'error', client, message: 'unknown command ' + cmd.cmd })
  }
})

emit({ event: 'started', client })
