"""Typed errors (and warnings) a user can cause. Each message says what was wrong and what to do."""

from __future__ import annotations


class TLCLTError(Exception):
    """Base class of every error tl_clt raises on purpose."""


class ConfigError(TLCLTError, ValueError):
    """A configuration field is missing, out of range, or inconsistent with another field."""


class ModelMismatchError(TLCLTError, ValueError):
    """A transcoder does not fit the model it is being spliced into."""


class UnknownHookError(TLCLTError, KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(TLCLTError, OSError):
    """A saved file is missing, truncated, or holds tensors of the wrong shape or dtype."""


class FileWriteError(TLCLTError, OSError):
    """A file could not be written (disk full, read-only or missing directory, no permission,
    or another process is writing it); whatever was there before is left as it was. `errno`
    and `filename` are those of the failure."""

    def __init__(self, errno: int | None, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(TLCLTError, ValueError):
    """Bad input to an analysis call: an empty prompt, a feature or layer out of range, ..."""


class IndexMismatchError(InputError):
    """A feature index file was made with other settings (transcoder, model, corpus or
    configuration) than the ones given."""


class UnsupportedModelError(TLCLTError, NotImplementedError):
    """A model family or option that tl_clt cannot handle yet."""


class AttributionCheckError(UnsupportedModelError):
    """An attribution graph failed the check `attribute` runs on it: the linearised pass does not
    reproduce the model's logits, or the local replacement model is not linear in its sources
    (something that should be frozen was not, e.g. attention patterns on a model that ignores
    edits of its pattern hook)."""


class TrainingError(TLCLTError, RuntimeError):
    """Training cannot go on (a NaN or infinite loss or input); the checkpoints written so far
    are kept."""


class TLCLTWarning(UserWarning):
    """Something a user should know that does not stop the work (e.g. words of a prompt the
    tokenizer does not know); filter it with `warnings.filterwarnings("ignore", category=...)`."""
