"""The tiny package the deployment example builds, tests, ships and verifies."""

__version__ = "1.0.0"


def greet(name: str) -> str:
    return f"hello, {name}"
