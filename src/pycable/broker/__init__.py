"""Brokers: the hot cache of stream history and sessions."""
