"""authsvc: an authentication and user-management service."""

__version__ = "0.1.0"
