"""``torch.compile`` the model's compute, not mmengine's training step.

mmengine's own ``cfg.compile`` compiles ``model.train_step`` whole, so TorchDynamo also traces
the optimiser wrapper: its autocast context parses torch's version string with ``packaging``,
and on torch 2.11 (CUDA) that raises inside the trace and stops training with an internal
Dynamo error. Compiling only the modules that do the arithmetic (backbone, decoder, head)
gives the same fused kernels, leaves masking, loss scaling and the optimiser step eager, and
works under DDP because the wrapper calls the same submodules.
"""
from typing import Sequence

from mmengine.hooks import Hook

from fastmim.engine.runner_model import bare_model
from fastmim.registry import HOOKS


@HOOKS.register_module()
class CompileModulesHook(Hook):
    """Compile the named submodules in place (``nn.Module.compile``) before training starts.

    Args:
        modules: attribute names of the model's submodules; names the model lacks are skipped
            (a classifier has no ``neck``), but at least one must exist.
        **compile_kwargs: passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic``...).
    """
    priority = 'VERY_LOW'

    def __init__(self, modules: Sequence[str] = ('backbone', 'neck', 'head'),
                 **compile_kwargs) -> None:
        if isinstance(modules, str) or not modules:
            raise ValueError(f'CompileModulesHook: modules must be a non-empty list of '
                             f'submodule names, got {modules!r}')
        self.modules = tuple(modules)
        self.compile_kwargs = compile_kwargs

    def before_train(self, runner) -> None:
        model = bare_model(runner)
        present = [name for name in self.modules if getattr(model, name, None) is not None]
        if not present:
            raise ValueError(f'CompileModulesHook: {type(model).__name__} has none of the '
                             f'submodules {list(self.modules)}')
        for name in present:
            getattr(model, name).compile(**self.compile_kwargs)
        runner.logger.info(f'torch.compile {present} {self.compile_kwargs or ""}: the first '
                           f'iterations are slow while it compiles')
