"""sorakit: the Sora web video API, self-hosted."""

__version__ = "0.1.0"
