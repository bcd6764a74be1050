// Drives the real @anycable/core client (ext protocol, `ws`) for tests/sdk: one cable with any
// number of subscriptions, to RPC channels (subscribeTo), signed streams or public streams.
//
// Config (argv[2] JSON): {url, name, connect?: bool, subscribe?: [sub...]} where sub is
//   {id, channel, params} | {id, signed} | {id, stream}
// Commands (stdin, JSON lines):
//   {"cmd":"subscribe", ...sub}   {"cmd":"perform","id","action","data"}   {"cmd":"whisper","id","data"}
//   {"cmd":"presence_info","id"}  {"cmd":"unsubscribe","id"}    {"cmd":"terminate"} (cut the socket: the client reconnects)
//   {"cmd":"connect"}             {"cmd":"exit"}
// Events (stdout, JSON lines): those of ../js/lib.mjs (connect, disconnect, close, frame, log,
// ws_open, ws_close ...) plus subscribed, subscribe_failed, message {id, data}, presence {id, data},
// presence_info {id, data}, performed.
import { emit, readConfig, makeCable, onLines, installCrashHandlers, reasonOf } from '../js/lib.mjs'

installCrashHandlers()

let config = readConfig()
let { cable, terminate, client } = makeCable(config)
let channels = {}

function subscribe({ id, channel, params, signed, stream }) {
  let ch
  if (signed !== undefined) ch = cable.streamFromSigned(signed)
  else if (stream !== undefined) ch = cable.streamFrom(stream)
  else ch = cable.subscribeTo(channel, params || {})
  channels[id] = ch
  ch.on('message', msg => emit({ event: 'message', client, id, data: msg }))
  ch.on('presence', msg => emit({ event: 'presence', client, id, data: msg }))
  ch.ensureSubscribed().then(
    () => emit({ event: 'subscribed', client, id, identifier: ch.identifier }),
    err => emit({ event: 'subscribe_failed', client, id, reason: reasonOf(err), message: err ? String(err.message) : null })
  )
}

onLines(async cmd => {
  switch (cmd.cmd) {
    case 'connect':
      cable.connect().catch(err => emit({ event: 'connect_failed', client, reason: reasonOf(err) }))
      break
    case 'subscribe':
      subscribe(cmd)
      break
    case 'perform':
      await channels[cmd.id].perform(cmd.action, cmd.data || {})
      emit({ event: 'performed', client, id: cmd.id, action: cmd.action })
      break
    case 'whisper':
      await channels[cmd.id].whisper(cmd.data)
      emit({ event: 'whispered', client, id: cmd.id })
      break
    case 'presence_info':
      emit({ event: 'presence_info', client, id: cmd.id, data: await channels[cmd.id].presence.info() })
      break
    case 'unsubscribe':
      await channels[cmd.id].disconnect()
      emit({ event: 'unsubscribed', client, id: cmd.id })
      break
    case 'terminate':
      emit({ event: 'terminated', client, ok: terminate() })
      break
    case 'exit':
      cable.disconnect()
      emit({ event: 'bye', client })
      setTimeout(() => process.exit(0), 20)
      break
    default:
      emit({ event: 'error', client, message: 'unknown command ' + cmd.cmd })
  }
})

for (let sub of config.subscribe || []) subscribe(sub)
if (config.connect !== false) {
  cable.connect().catch(err => emit({ event: 'connect_failed', client, reason: reasonOf(err) }))
}
emit({ event: 'started', client })
