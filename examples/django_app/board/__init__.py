"""The board app: rooms, messages, and their cable channel."""
