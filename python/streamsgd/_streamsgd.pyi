"""Type stubs of the extension module (the Rust kernel)."""

from os import PathLike
from typing import Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]
_F32 = npt.NDArray[np.float32]

class StreamsgdError(ValueError): ...

class Model:
    """A linear model learning online: dense rows through a feature stage (features=D), or
    sparse rows hashed into 2^bits weights (bits=B)."""

    def __init__(
        self,
        loss: str = "log_loss",
        *,
        features: Optional[int] = None,
        bits: Optional[int] = None,
        optimizer: Optional[str] = None,
        lr: Optional[float] = None,
        l1: float = 0.0,
        l2: float = 0.0,
        schedule: str = "invscaling",
        power: float = 0.5,
        beta: float = 1.0,
        batch: Optional[int] = None,
        scale: Optional[str] = None,
        missing: str = "reject",
        clip: Optional[float] = None,
        interactions: Sequence[str] = ...,
        hash_seed: int = 0,
        skip_bad: bool = False,
        delta: float = 1.0,
        epsilon: float = 0.1,
        quantile: float = 0.5,
    ) -> None: ...
    @staticmethod
    def load(path: _Path) -> "Model": ...
    def save(self, path: _Path) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes, batch: Optional[int] = None, skip_bad: bool = False) -> "Model": ...
    @property
    def features(self) -> Optional[int]: ...
    def learn(self, x: _F32, y: _F32, sample_weight: Optional[_F32] = None, atomic: bool = False) -> None: ...
    def predict(self, x: _F32) -> _F32: ...
    def coefficients(self, ids: Optional[int] = None) -> Tuple[_F32, float]: ...
    def decision_function(self, x: _F32) -> _F32: ...
    def learn_csr(
        self,
        indptr: npt.NDArray[np.uint64],
        indices: npt.NDArray[np.uint32],
        data: _F32,
        y: _F32,
        sample_weight: Optional[_F32] = None,
    ) -> None: ...
    def predict_csr(
        self, indptr: npt.NDArray[np.uint64], indices: npt.NDArray[np.uint32], data: _F32, margins: bool = False
    ) -> _F32: ...
    def learn_one(self, x: Mapping[str, Union[float, int, bool, str]], y: float) -> None: ...
    def predict_one(self, x: Mapping[str, Union[float, int, bool, str]]) -> float: ...
    def stats(self) -> dict: ...

def file_features(path: _Path) -> Optional[int]: ...
def run_file(
    path: _Path,
    template: Model,
    threads: Optional[int] = None,
    holdout: float = 0.0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Tuple[Model, str]: ...
