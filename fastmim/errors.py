"""Errors that every layer of fastmim raises and catches: a leaf module, importing nothing.

Models, engine and tools all report unusable checkpoints the same way; keeping the class here
lets models raise it without importing the engine, and the engine catch it without importing
models. A run that cannot start (command line, environment, work dir, dataset paths) is a
:class:`LaunchError`, which engine modules and tools raise and catch alike.
"""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file and the reason."""


class LaunchError(RuntimeError):
    """The command line, the environment or the work dir cannot start a run."""
