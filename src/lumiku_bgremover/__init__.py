"""lumiku-bgremover: background removal for the Lumiku platform, over NATS JetStream."""

__version__ = "0.1.0"

__all__ = ["__version__"]
