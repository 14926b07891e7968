"""The work dir's record of the last validation inside training that finished.

``PreemptionHook`` writes it; the train loop and the resume checks read it to leave a
validation a stopped run had already finished out of the resumed one. A module of its own, so
the loops read it without importing the hooks package (which imports the loops).
"""
import os.path as osp

# File in the work dir holding the iteration after which the last validation inside training
# finished (written by rank 0, atomically, after CheckpointHook's save_best).
LAST_VALIDATION_FILE = '.last_validation'


def validation_finished(work_dir: str, iteration) -> bool:
    """Whether the work dir records the validation after ``iteration`` as the last one
    finished (an older run's record is deleted when a new run starts there)."""
    marker = osp.join(work_dir, LAST_VALIDATION_FILE)
    try:
        with open(marker) as file:
            return int(file.read().strip()) == iteration
    except (OSError, ValueError):
        return False
