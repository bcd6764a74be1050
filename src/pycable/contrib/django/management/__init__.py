"""Management commands of pycable.contrib.django."""
