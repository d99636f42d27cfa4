from .hooks import (FAILED, FINISHED, EpochSeedHook, RunStateHook,
                    clear_run_state, write_state)
from .preflight import DatasetError, check_datasets

__all__ = [
    'RunStateHook', 'EpochSeedHook', 'clear_run_state', 'write_state',
    'FINISHED', 'FAILED', 'DatasetError', 'check_datasets'
]
