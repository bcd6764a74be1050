"""Broadcasters: how publications arrive from the application."""
