"""The chat demo: ``make demo``; see docs/chat_demo.md."""
