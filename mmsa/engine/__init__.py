from .hooks import (FAILED, FINISHED, EpochSeedHook, RunStateHook,
                    write_state)
from .preflight import DatasetError, check_datasets

__all__ = ['RunStateHook', 'EpochSeedHook', 'write_state', 'FINISHED', 'FAILED',
           'DatasetError', 'check_datasets']
