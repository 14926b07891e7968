from .guarded import (AutocastOptimWrapper, GuardedAmpOptimWrapper, GuardedOptimWrapper,
                      NonFiniteLossError)

__all__ = ['AutocastOptimWrapper', 'GuardedAmpOptimWrapper', 'GuardedOptimWrapper',
           'NonFiniteLossError']
