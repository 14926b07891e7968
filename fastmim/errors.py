"""Errors that every layer of fastmim raises and catches: a leaf module, importing nothing.

Models, engine and tools all report unusable checkpoints the same way; keeping the class here
lets models raise it without importing the engine, and the engine catch it without importing
models.
"""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file and the reason."""
