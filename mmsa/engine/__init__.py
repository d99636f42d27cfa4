from .checkpoints import (AtomicCheckpointHook, check_checkpoint,
                          check_run_checkpoints)
from .hooks import (FAILED, FINISHED, INTERRUPTED, EpochSeedHook,
                    RunStateHook, clear_run_state, write_state)
from .loops import ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop
from .preflight import DatasetError, check_datasets
from .stop import TrainGuardHook

__all__ = [
    'RunStateHook', 'EpochSeedHook', 'TrainGuardHook', 'AtomicCheckpointHook',
    'ResumableEpochBasedTrainLoop', 'ResumableIterBasedTrainLoop',
    'clear_run_state', 'write_state', 'check_checkpoint',
    'check_run_checkpoints', 'FINISHED', 'FAILED', 'INTERRUPTED',
    'DatasetError', 'check_datasets'
]
