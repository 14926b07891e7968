"""Runtime pieces around mmengine's Runner: safe checkpoints, guarded optimisers, hooks,
schedulers."""
from . import checkpoint, unused_file_client
from .hooks import *  # noqa: F401,F403
from .loops import ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop  # noqa: F401
from .optim_constructors import *  # noqa: F401,F403
from .optim_wrappers import *  # noqa: F401,F403
from .schedulers import *  # noqa: F401,F403

checkpoint.install()
unused_file_client.install()
