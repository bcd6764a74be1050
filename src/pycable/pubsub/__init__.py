"""Pub/sub: re-transmission of registered messages to every node of a cluster."""
