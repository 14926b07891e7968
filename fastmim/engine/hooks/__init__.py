from .checkpoint_fit_hook import CheckpointFitsModelHook
from .checkpoint_meta_hook import CheckpointMetaHook
from .compile_hook import CompileModulesHook
from .dataset_classes_hook import ClassCountWarning, DatasetClassesCheckHook
from .preemption_hook import PREEMPTED_EXIT_STATUS, PreemptionHook, TrainingPreempted
from .progressive_resolution_hook import PerUpdateParamSchedulerHook, ProgressiveResolutionHook
from .reconstruction_hook import ReconstructionVisualizationHook
from .resume_checks import ResumeChecksHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = [
    'CheckpointFitsModelHook', 'CheckpointMetaHook', 'ClassCountWarning', 'CompileModulesHook',
    'DatasetClassesCheckHook', 'PerUpdateParamSchedulerHook', 'PREEMPTED_EXIT_STATUS',
    'PreemptionHook', 'ProgressiveResolutionHook',
    'ReconstructionVisualizationHook', 'ResumeChecksHook', 'SafeCheckpointHook',
    'TrainingPreempted'
]
