"""Durable Streams: stream history and appends over plain HTTP (docs/durable_streams.md)."""
