// Interactive scenario driver: one @anycable/core cable, controlled by JSON
// commands on stdin, reporting newline-delimited JSON events on stdout.
//
// Config (argv[2] JSON): {
//   url,                       WebSocket URL (extra params, e.g. ?jid=, go in the URL)
//   name,                      client name echoed in every event
//   connect: bool,             call cable.connect() at start
//   reconnectDelay: ms,        initial reconnect delay (default 100)
//   auth, websocketAuthStrategy, websocketOptions, protocolOptions, historyTimestamp, logLevel
//   subscribe: [{id, stream} | {id, signed}]   subscriptions made at start
// }
//
// Commands (one JSON object per stdin line):
//   {"cmd":"connect"}                         cable.connect()
//   {"cmd":"subscribe","id":"x","stream":"s"} or {"cmd":"subscribe","id":"x","signed":"..."}
//   {"cmd":"whisper","id":"x","data":{...}}
//   {"cmd":"presence_join","id":"x","pid":"42","info":{...}}   channel.presence.join(pid, info)
//   {"cmd":"presence_leave","id":"x"}         channel.presence.leave()
//   {"cmd":"presence_info","id":"x"}          channel.presence.info() -> presence_info / presence_info_failed
//   {"cmd":"set_delay","ms":N}                reconnect delay for the next attempts
//   {"cmd":"terminate","delay":N}             set the delay (optional), then ws.terminate()
//   {"cmd":"disconnect"}                      cable.disconnect()
//   {"cmd":"reconnect_now"}                   cable.monitor.reconnectNow()
//   {"cmd":"state"}                           emits {"event":"state",...}
//   {"cmd":"exit"}
//
// Events: started, ws_open, ws_close, connect, disconnect, close, sent, frame, log,
// subscribed, subscribe_failed, message, info, presence, presence_joined, presence_left,
// presence_info, presence_info_failed, whispered, terminated, state, error.
import { emit, readConfig, makeCable, onLines, installCrashHandlers, reasonOf } from './lib.mjs'

installCrashHandlers()

let config = readConfig()
let { cable, state, terminate, client } = makeCable(config)
let channels = {}

function subscribe({ id, stream, signed }) {
  let channel = signed !== undefined ? cable.streamFromSigned(signed) : cable.streamFrom(stream)
  channels[id] = channel
  channel.on('message', (msg, meta) => emit({ event: 'message', client, id, data: msg, meta: meta || null }))
  channel.on('info', ev => emit({ event: 'info', client, id, type: ev.type, data: ev.data === undefined ? null : ev.data }))
  channel.on('presence', ev => emit({ event: 'presence', client, id, data: ev }))
  channel.on('connect', ev =>
    emit({ event: 'channel_connect', client, id, reconnect: ev.reconnect, restored: ev.restored })
  )
  channel.on('disconnect', err => emit({ event: 'channel_disconnect', client, id, reason: reasonOf(err) }))
  channel.on('close', err => emit({ event: 'channel_close', client, id, reason: reasonOf(err) }))
  channel.ensureSubscribed().then(
    () => emit({ event: 'subscribed', client, id, identifier: channel.identifier }),
    err =>
      emit({
        event: 'subscribe_failed',
        client,
        id,
        error: err ? err.name : null,
        reason: reasonOf(err),
        message: err ? String(err.message) : null
      })
  )
  return channel
}

onLines(async cmd => {
  switch (cmd.cmd) {
    case 'connect':
      cable.connect().catch(err => emit({ event: 'connect_failed', client, reason: reasonOf(err) }))
      break
    case 'subscribe':
      subscribe(cmd)
      break
    case 'whisper': {
      let channel = channels[cmd.id]
      await channel.whisper(cmd.data)
      emit({ event: 'whispered', client, id: cmd.id })
      break
    }
    case 'presence_join':
      await channels[cmd.id].presence.join(cmd.pid, cmd.info)
      emit({ event: 'presence_joined', client, id: cmd.id })
      break
    case 'presence_leave':
      await channels[cmd.id].presence.leave()
      emit({ event: 'presence_left', client, id: cmd.id })
      break
    case 'presence_info':
      channels[cmd.id].presence.info().then(
        info => emit({ event: 'presence_info', client, id: cmd.id, info }),
        err => emit({ event: 'presence_info_failed', client, id: cmd.id, message: String(err && err.message) })
      )
      break
    case 'set_delay':
      state.reconnectDelay = cmd.ms
      emit({ event: 'delay_set', client, ms: cmd.ms })
      break
    case 'terminate':
      if (cmd.delay !== undefined) state.reconnectDelay = cmd.delay
      emit({ event: 'terminated', client, ok: terminate() })
      break
    case 'disconnect':
      cable.disconnect()
      break
    case 'reconnect_now':
      emit({ event: 'reconnect_now', client, ok: cable.monitor.reconnectNow() })
      break
    case 'state':
      emit({
        event: 'state',
        client,
        cable: cable.state,
        sessionId: cable.sessionId || null,
        channels: Object.fromEntries(Object.entries(channels).map(([k, ch]) => [k, ch.state]))
      })
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
if (config.connect) {
  cable.connect().catch(err => emit({ event: 'connect_failed', client, reason: reasonOf(err) }))
}

emit({ event: 'started', client })
