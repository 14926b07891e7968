from .mim_decoder import MIMDecoder

__all__ = ['MIMDecoder']
