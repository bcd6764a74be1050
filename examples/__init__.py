"""Runnable examples of pycable applications (not part of the installed package)."""
