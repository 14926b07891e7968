from .fastmim import FastMIM

__all__ = ['FastMIM']
