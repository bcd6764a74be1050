// Shared helpers for the scenario scripts that drive the real @anycable/core client.
//
// Every script prints newline-delimited JSON events on stdout; the Python side
// (test_js_client.py) reads them line by line and synchronises on them.
import { createCable, BaseLogger } from '@anycable/core'
import WebSocket from 'ws'
import readline from 'node:readline'

export function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

// The scenario config comes as a JSON string in argv[2] (or in the env var
// PYCABLE_JS_CONFIG when argv is empty).
export function readConfig() {
  let raw = process.argv[2] || process.env.PYCABLE_JS_CONFIG
  if (!raw) {
    throw new Error('missing JSON config (argv[2] or PYCABLE_JS_CONFIG)')
  }
  return JSON.parse(raw)
}

// Client log entries (warn/error by default) become `log` events, so a test can
// assert that the client never complained (e.g. "subscription not found,
// unsubscribing", which is how it reacts to an unexpected confirm_subscription).
class EventLogger extends BaseLogger {
  constructor(level, client) {
    super(level)
    this.client = client
  }

  writeLogEntry(level, msg, details) {
    let safe
    try {
      safe = details === undefined ? undefined : JSON.parse(JSON.stringify(details, errorReplacer))
    } catch (e) {
      safe = String(details)
    }
    emit({ event: 'log', client: this.client, level, msg: String(msg), details: safe })
  }
}

function errorReplacer(key, value) {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, reason: value.reason }
  }
  return value
}

export function reasonOf(err) {
  if (!err) return null
  if (typeof err === 'string') return err
  return err.reason === undefined ? null : err.reason
}

// Creates a cable with the options the brief requires, plus instrumentation:
//  - `sent` events for every command the client sends (pongs excluded),
//  - `frame` events for every decoded incoming frame that is not a ping or a stream message,
//  - `ws_open` / `ws_close` events for the underlying `ws` socket.
// `state.reconnectDelay` is read by the reconnect strategy on every attempt, so a
// scenario can hold the client disconnected for a while.
export function makeCable(config, opts = {}) {
  let client = opts.client === undefined ? (config.name || 'c') : opts.client
  let quiet = !!opts.quiet
  let state = { reconnectDelay: config.reconnectDelay === undefined ? 100 : config.reconnectDelay }

  let cableOpts = {
    protocol: config.protocol || 'actioncable-v1-ext-json',
    websocketImplementation: WebSocket,
    reconnectStrategy: () => state.reconnectDelay,
    logger: opts.logger || new EventLogger(config.logLevel || 'warn', client)
  }
  if (config.auth) cableOpts.auth = config.auth
  if (config.websocketAuthStrategy) cableOpts.websocketAuthStrategy = config.websocketAuthStrategy
  if (config.websocketOptions) cableOpts.websocketOptions = config.websocketOptions
  if (config.protocolOptions) cableOpts.protocolOptions = config.protocolOptions
  if (config.historyTimestamp !== undefined) cableOpts.historyTimestamp = config.historyTimestamp

  let cable = createCable(config.url, cableOpts)

  if (!quiet) {
    let origSend = cable.send.bind(cable)
    let historyDelay = config.delayHistoryMs || 0
    cable.send = msg => {
      if (historyDelay && msg && msg.command === 'history') {
        // Simulates a slow uplink: the server sees the history command late, so live
        // traffic arrives inside the restore window (js-client.md section 6).
        setTimeout(() => {
          try {
            emit({ event: 'sent', client, msg, delayed: historyDelay })
            origSend(msg)
          } catch (err) {
            emit({ event: 'delayed_send_failed', client, message: String(err && err.message) })
          }
        }, historyDelay)
        return
      }
      if (msg && msg.command !== 'pong') emit({ event: 'sent', client, msg })
      return origSend(msg)
    }

    let origReceive = cable.protocol.receive.bind(cable.protocol)
    cable.protocol.receive = msg => {
      if (msg && typeof msg === 'object' && msg.type !== 'ping' && !(msg.message !== undefined && !msg.type)) {
        emit({ event: 'frame', client, frame: msg })
      }
      return origReceive(msg)
    }

    let transport = cable.transport
    let origOpen = transport.open.bind(transport)
    transport.open = () => {
      let promise = origOpen()
      let ws = transport.ws
      if (ws) {
        ws.on('open', () => emit({ event: 'ws_open', client, protocol: ws.protocol }))
        ws.on('close', (code, reason) =>
          emit({ event: 'ws_close', client, code, reason: reason ? reason.toString() : '' })
        )
        ws.on('error', err => emit({ event: 'ws_error', client, message: String(err && err.message) }))
      }
      return promise
    }

    cable.on('connect', ev => emit({ event: 'connect', client, reconnect: ev.reconnect, restored: ev.restored }))
    cable.on('disconnect', err => emit({ event: 'disconnect', client, reason: reasonOf(err) }))
    cable.on('close', err => emit({ event: 'close', client, reason: reasonOf(err) }))
    cable.on('info', ev => emit({ event: 'cable_info', client, type: ev.type, data: ev.data }))
  }

  // Cut the socket without a disconnect frame or close handshake (like a network failure).
  let terminate = () => {
    let ws = cable.transport.ws
    if (!ws) return false
    ws.terminate()
    return true
  }

  return { cable, state, terminate, client }
}

export function onLines(handler) {
  let rl = readline.createInterface({ input: process.stdin, terminal: false })
  rl.on('line', line => {
    line = line.trim()
    if (!line) return
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch (e) {
      emit({ event: 'error', message: 'bad command line: ' + line })
      return
    }
    Promise.resolve()
      .then(() => handler(cmd))
      .catch(err =>
        emit({ event: 'error', message: String(err && err.stack ? err.stack : err), cmd })
      )
  })
  rl.on('close', () => {
    // Parent went away: exit.
    setTimeout(() => process.exit(0), 50)
  })
  return rl
}

export function installCrashHandlers() {
  process.on('unhandledRejection', err => {
    emit({ event: 'unhandled', message: String(err && err.stack ? err.stack : err) })
  })
  process.on('uncaughtException', err => {
    emit({ event: 'uncaught', message: String(err && err.stack ? err.stack : err) })
  })
}
