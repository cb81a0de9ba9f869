"""`disarm-tagger serve`: the review page and REST API (FastAPI on uvicorn) over the library."""

from .app import create_app
from .security import is_loopback

__all__ = ["create_app", "is_loopback"]
