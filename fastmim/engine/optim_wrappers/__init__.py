from .guarded import (AutocastOptimWrapper, GuardedAmpOptimWrapper, GuardedOptimWrapper,
                      NonFiniteLossError, mixed_precision_of)

__all__ = ['AutocastOptimWrapper', 'GuardedAmpOptimWrapper', 'GuardedOptimWrapper',
           'NonFiniteLossError', 'mixed_precision_of']
