"""mmsa's own error types: what a user gave it is wrong, or a run stopped.

Each is raised where mmsa checks its input (a config, a dataset, a
checkpoint file, a work dir) and says what was wrong, the value and the
fix. ``tools/*.py`` end with that one line, without a traceback; any other
exception, whatever its type, is a bug somewhere and keeps its traceback.
Each type also derives from the built-in type earlier mmsa versions raised
(``ValueError``, ``OSError`` ...), so ``except ValueError`` still catches a
config error.

Outside the tools, :func:`install_excepthook` (run when mmsa is imported)
prints an uncaught mmsa error the same way, in any script: e.g. mmengine's
``load_checkpoint`` of a file mmsa refuses. ``MMSA_DEBUG=1`` shows the
traceback everywhere.
"""
import os
import pickle
import sys
from typing import Dict, Optional

__all__ = [
    'MMSAError', 'ConfigError', 'ConfigKeyError', 'ConfigTypeError',
    'DatasetError', 'DataLoadError',
    'CheckpointError', 'CheckpointNotFoundError', 'UnsafeCheckpointError',
    'UnreadableCheckpointError', 'CheckpointMismatchError',
    'WorkDirBusyError', 'NonFiniteLossError', 'TrainingInterrupted',
    'install_excepthook', 'debugging'
]

DEBUG_HINT = '(set MMSA_DEBUG=1 for the traceback)'


def debugging() -> bool:
    """Whether ``MMSA_DEBUG`` asks for tracebacks instead of one line."""
    return os.environ.get('MMSA_DEBUG', '').lower() not in ('', '0', 'false')


class MMSAError(Exception):
    """Base of mmsa's own errors: the input was wrong, or the run stopped.

    Attributes:
        exit_code (int): The tools' exit status for it.
        state_file (str): The work dir's record of it (``failed.json``).
        details (dict): Extra entries for that record.
    """

    exit_code = 1
    state_file = 'failed.json'

    def __init__(self, message: str, **details) -> None:
        super().__init__(message)
        self.details: Dict = details

    def __str__(self) -> str:
        # the message as given, also where a built-in base (KeyError)
        # would quote it
        return str(self.args[0]) if self.args else ''

    def one_line(self) -> str:
        """How the tools print it."""
        text = ' '.join(str(self).split('\n'))
        return f'error: {type(self).__name__}: {text}'


class ConfigError(MMSAError, ValueError):
    """A config option that is wrong, or that would have no effect."""


class ConfigKeyError(ConfigError, KeyError):
    """A config names something that does not exist (an unknown type)."""


class ConfigTypeError(ConfigError, TypeError):
    """A config option of the wrong kind, or one nothing takes."""


class DatasetError(MMSAError, ValueError):
    """A dataset file is missing, malformed or holds values that cannot
    train."""


class DataLoadError(DatasetError):
    """A file of the dataset could not be loaded during the run
    (:meth:`of` words it; ``details['file']`` names the file).

    Raised in a data-loader worker, it reaches the main process through
    torch, which rebuilds it from one string: the worker's traceback, ending
    in this error's line. The rebuilt error keeps only that line, and reads
    the file back from it.
    """

    _FAILED = ' failed while training read it ('

    def __init__(self, message: str, **details) -> None:
        marker = f'{type(self).__module__}.{type(self).__qualname__}: '
        if message.startswith('Caught ') and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
            head = message.split(self._FAILED, 1)[0]
            if not details and head != message and ': ' in head:
                details = dict(file=head.rsplit(': ', 1)[0])
        super().__init__(message, **details)

    @classmethod
    def of(cls, path: Optional[str], step: str,
           err: BaseException) -> 'DataLoadError':
        """The error for ``path``, which the pipeline step ``step`` (e.g.
        ``'LoadImageFromFile'``) failed to load with ``err``."""
        return cls(
            f'{path}: {step}{cls._FAILED}{type(err).__name__}: {err}); '
            f'replace the file or remove it from the dataset '
            f'(tools/train.py checks every file fully with --cfg-options '
            f'preflight.decode=full)', file=path)


class CheckpointError(MMSAError):
    """A checkpoint file that mmsa will not, or cannot, use."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """There is no checkpoint file at the path."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint that would run code if unpickled; nothing of it ran."""


class UnreadableCheckpointError(CheckpointError, OSError):
    """A checkpoint file that is empty, truncated or no checkpoint at all."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint whose tensors do not fit the model it is loaded into."""


class WorkDirBusyError(MMSAError, RuntimeError):
    """Another live run holds the work dir."""


class NonFiniteLossError(MMSAError, FloatingPointError):
    """Training produced a NaN or infinite loss and was stopped."""


class TrainingInterrupted(MMSAError):
    """A signal stopped training after a checkpoint was saved.

    Args:
        message (str): What happened and how to continue.
        signum (int): The signal; the tools exit with ``128 + signum``, as
            a process ended by it would.
    """

    state_file = 'interrupted.json'

    def __init__(self, message: str, signum: int = 15, **details) -> None:
        super().__init__(message, signal=signum, **details)
        self.signum = signum
        self.exit_code = 128 + signum

    def one_line(self) -> str:
        return f'stopped: {self}'


_previous_hook: Optional[object] = None


def _excepthook(exc_type, exc, tb) -> None:
    if issubclass(exc_type, MMSAError) and not debugging():
        print(exc.one_line(), file=sys.stderr)
        print(DEBUG_HINT, file=sys.stderr)
        return
    _previous_hook(exc_type, exc, tb)


def install_excepthook() -> None:
    """Print an uncaught mmsa error as its one line (idempotent).

    Other exceptions go to the hook that was there before.
    """
    global _previous_hook
    if sys.excepthook is _excepthook:
        return
    _previous_hook = sys.excepthook
    sys.excepthook = _excepthook
