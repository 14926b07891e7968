from .guarded import (AutocastOptimWrapper, GuardedAmpOptimWrapper, GuardedOptimWrapper,
                      NonFiniteLossError, each_optim_wrapper, mixed_precision_of)

__all__ = ['AutocastOptimWrapper', 'GuardedAmpOptimWrapper', 'GuardedOptimWrapper',
           'NonFiniteLossError', 'each_optim_wrapper', 'mixed_precision_of']
