"""The FastAPI example: see docs/frameworks.md."""
