"""Transport-agnostic orchestration: sessions, the hub, the command handlers."""
