"""Framework integrations for SDK applications: :mod:`pycable.contrib.fastapi` (FastAPI and
Starlette) and :mod:`pycable.contrib.django`. Each imports its framework only when imported."""
