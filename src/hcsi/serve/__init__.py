"""REST API and web page for analysts (`hcsi serve`)."""
from .app import create_app

__all__ = ["create_app"]
