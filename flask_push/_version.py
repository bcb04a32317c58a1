"""flask-push's version, in a module of its own that imports nothing, so that any
module (the OpenAPI document, say) can read it at import time without a cycle."""

__version__ = "0.1.0.dev0"
