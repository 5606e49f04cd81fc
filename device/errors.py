"""Exceptions that carry a message meant for a person (technician, IT, ML engineer)."""


class SmearscopeError(Exception):
    """Base class: str(exc) is shown to the user as it is."""


class ImageError(SmearscopeError):
    """An input file or buffer is not a usable image."""


class BundleError(SmearscopeError):
    """A model bundle is missing, tampered with, or does not match its manifest."""


class ConfigError(SmearscopeError):
    """The configuration is invalid; the message names the bad key."""
