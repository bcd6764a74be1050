"""All socket I/O: HTTP, the WebSocket upgrade, frames, timers and write buffers."""
