"""``python manage.py pycable_grpc``."""
