"""LightGBM trees compiled to native code (lleaves, LLVM), for batch scoring.

The trees are compiled on the machine that scores them, from the verified `model.txt`, for this
machine's CPU, by `tree_compiler` in a child process: a shared library where the system linker
is found (loaded with ctypes: the scoring process never loads LLVM), else object code that
LLVM's JIT linker loads. The code is cached on local disk under the model file's sha256 and this
machine's build (lleaves and llvmlite versions, the code's form, the CPU), with its own sha256
beside it: cached code is loaded only if it matches, from a private copy. Nothing compiled is
ever stored in or loaded from the registry. Each process keeps the latest compiled model in
memory, so a Spark worker compiles (or loads) once per model.
`tests/unit/test_compiled.py` holds the scores to LightGBM's.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import itertools
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from churn_mlops.errors import ChurnError
from churn_mlops.models import tree_compiler
from churn_mlops.models.booster import Booster

if TYPE_CHECKING:
    from churn_mlops.models.artifacts import Predictor

logger = logging.getLogger(__name__)

Mode = Literal["auto", "on", "off"]
COMPILED = "compiled"
_COMPILE_S = 900  # a compile that takes longer has gone wrong
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "stepping", "flags", "Features", "CPU ")  # /proc/cpuinfo
TOLERANCE = 1e-9  # largest raw-score difference from LightGBM accepted (sums in another order)
_BLOCK_ROWS = 16_384  # rows turned row-major at a time: the block stays in cache for the trees
_THREAD_ROWS = 20_000  # fewer rows per thread cost more in start-up than they save
_PIECES_PER_THREAD = 4  # rows are shared out in this many pieces per thread, as threads free up
_ENTRY_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)
_LOADED: dict[str, Forest] = {}  # in each process: the latest compiled model, by model sha256


class CompileError(ChurnError):
    """The trees cannot be compiled here (lleaves missing, or compilation failed)."""


@dataclass(frozen=True)
class Forest:
    """A model's trees as native code: raw scores of row-major float64 rows."""

    engine: Any  # llvmlite's execution engine, which owns the code: keep it alive
    entry: Callable[[int, int, int, int], None]  # (rows, out, first, stop); releases the GIL
    num_feature: int

    def raw_score(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Raw scores (log-odds) of the rows of a feature matrix, on num_threads threads (0: all cores)."""
        if matrix.ndim != 2 or matrix.shape[1] != self.num_feature:
            raise CompileError(f"a matrix of shape {matrix.shape} for a model of {self.num_feature} features")
        rows = len(matrix)
        out = np.empty(rows, dtype=np.float64)
        threads = min(num_threads or os.cpu_count() or 1, max(1, rows // _THREAD_ROWS))
        if threads == 1:
            self._score(matrix, out, 0, rows)
            return out
        # More pieces than threads: a thread another thread delays takes fewer, the rest take more.
        bounds = np.linspace(0, rows, threads * _PIECES_PER_THREAD + 1).astype(int)
        with ThreadPoolExecutor(threads, thread_name_prefix="compiled-trees") as pool:
            for done in [pool.submit(self._score, matrix, out, a, b) for a, b in itertools.pairwise(bounds)]:
                done.result()
        return out

    def _score(self, matrix: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
        for first in range(start, stop, _BLOCK_ROWS):
            block = np.ascontiguousarray(matrix[first : min(first + _BLOCK_ROWS, stop)], dtype=np.float64)
            self.entry(block.ctypes.data, out[first:].ctypes.data, 0, len(block))


class CompiledBooster(Booster):
    """A LightGBM Booster whose raw scores come from its compiled trees.

    Contributions and the one-row path stay LightGBM's, on the Booster it was compiled from.
    """

    def __init__(self, booster: Booster, forest: Forest) -> None:
        # Shares the loaded LightGBM model rather than loading it twice; `booster` owns the handle.
        self.model_text, self.handle = booster.model_text, booster.handle
        self.num_feature, self.lightgbm, self.forest = booster.num_feature, booster, forest

    def raw_score(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Raw scores (log-odds) from the compiled trees."""
        return self.forest.raw_score(matrix, num_threads)


def cache_dir(home: Path) -> Path:
    """Where compiled trees are cached under CHURN_HOME (local disk, never the registry)."""
    return home / "cache" / COMPILED


def scorer_name(predictor: Predictor) -> str:
    """What scores a predictor's rows: compiled, lightgbm or logistic_regression."""
    return COMPILED if isinstance(predictor.booster, CompiledBooster) else predictor.kind


def with_compiled_trees(predictor: Predictor, mode: Mode, cache_dir: Path | None) -> Predictor:
    """The predictor scoring with compiled trees where `mode` and the model allow.

    auto falls back to LightGBM with one log line saying why; on raises CompileError instead;
    off never compiles. A model without trees (logistic regression) is returned unchanged.
    """
    booster = predictor.booster
    if mode == "off" or isinstance(booster, CompiledBooster) or not isinstance(booster, Booster):
        return predictor
    try:
        forest = compile_forest(booster.model_text, cache_dir)
        _check_against(forest, booster)
    except CompileError as exc:
        if mode == "on":
            raise CompileError(f"batch.compiled is on, but {exc}") from exc
        logger.warning("scoring with LightGBM instead of compiled trees: %s", exc)
        return predictor
    return dataclasses.replace(predictor, booster=CompiledBooster(booster, forest))


def _check_against(forest: Forest, booster: Booster) -> None:
    """Raise CompileError unless the compiled trees score probe rows as LightGBM does."""
    rows = _probe_rows(booster.num_feature)
    gap = float(np.max(np.abs(forest.raw_score(rows, 1) - booster.raw_score(rows, 1))))
    if not gap <= TOLERANCE:
        raise CompileError(f"the compiled trees disagree with LightGBM by {gap:.3g} on probe rows")


def _probe_rows(columns: int) -> np.ndarray:
    """Rows that reach many branches: missing values, category-like codes, negatives, large values."""
    rng = np.random.default_rng(0)
    codes = rng.choice(np.array([np.nan, -1.0, 0.0, 1.0, 2.0, 3.0, 5.0, 40.0]), size=(256, columns))
    numbers = rng.normal(0.0, 1.0, size=(256, columns)) * rng.choice(
        [1.0, 10.0, 100.0, 1000.0], size=(256, 1)
    )
    return np.concatenate([codes, numbers, np.abs(numbers)])


def compile_forest(model_text: str, cache_dir: Path | None) -> Forest:
    """The model's trees compiled for this machine: from this process, the disk cache, or LLVM."""
    digest = hashlib.sha256(model_text.encode()).hexdigest()
    if digest in _LOADED:
        return _LOADED[digest]
    if "\nis_linear=1" in model_text:
        raise CompileError("lleaves does not compile linear trees (linear_tree=true)")
    for package in ("lleaves", "llvmlite"):
        if importlib.util.find_spec(package) is None:
            raise CompileError(f"{package} is not installed; install the 'compiled' extra")
    linker = _linker()
    try:
        cached = _CachedCode(cache_dir / digest, _build_key(linker)) if cache_dir else None
        code = cached.read() if cached else None
        if code is None:
            code = _compile_in_child(model_text, linker)
            if cached:
                cached.write(code)
        forest = (_load_library if linker else _load_object)(code, _feature_count(model_text))
    except (OSError, RuntimeError, ValueError, AttributeError) as exc:  # what ctypes and LLVM raise
        raise CompileError(f"the compiled trees did not load ({type(exc).__name__}: {exc})") from exc
    _LOADED.clear()
    _LOADED[digest] = forest
    return forest


def _linker() -> str | None:
    """The system linker, which makes the code a shared library: loading it needs no LLVM here."""
    return shutil.which("ld") if sys.platform.startswith("linux") else None


def _build_key(linker: str | None) -> str:
    """What the code depends on besides the model: tool versions, its form and this CPU."""
    versions = [f"{name}={importlib.metadata.version(name)}" for name in ("lleaves", "llvmlite")]
    parts = [*versions, "library" if linker else "object", *_cpu(linker)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cpu(linker: str | None) -> list[str]:
    """This CPU's identity: the kernel's description (Linux), else LLVM's."""
    if linker:
        with contextlib.suppress(OSError):
            lines = Path("/proc/cpuinfo").read_text().splitlines()
            return [platform.machine(), *sorted({line for line in lines if line.startswith(_CPU_FIELDS)})]
    return list(tree_compiler.host(tree_compiler.llvm_binding()))


def _compile_in_child(model_text: str, linker: str | None) -> bytes:
    """Code from `tree_compiler` in a child process (its memory and crashes stay there)."""
    with tempfile.TemporaryDirectory(prefix="churn-compile-") as folder:
        model, out = Path(folder) / "model.txt", Path(folder) / "forest.bin"
        model.write_text(model_text)
        command = [
            sys.executable,
            "-m",
            tree_compiler.__name__,
            str(model),
            str(out),
            *filter(None, [linker]),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=_COMPILE_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CompileError(f"the trees did not compile within {_COMPILE_S} s") from exc
        if done.returncode != 0 or not out.is_file():
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise CompileError(f"the trees did not compile ({why})")
        return out.read_bytes()


def _load_library(code: bytes, num_feature: int) -> Forest:
    """Load verified shared-library bytes from a private copy (removed once loaded)."""
    with tempfile.TemporaryDirectory(prefix="churn-trees-") as folder:
        path = Path(folder) / "forest.so"
        path.write_bytes(code)
        library = ctypes.CDLL(str(path))
    entry = getattr(library, tree_compiler.ENTRY)
    entry.restype, entry.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]
    return Forest(library, entry, num_feature)


def _load_object(code: bytes, num_feature: int) -> Forest:
    """Link verified object code into this process with LLVM's JIT linker (no system linker)."""
    llvm = tree_compiler.llvm_binding()
    machine = tree_compiler.target_machine(llvm, tree_compiler.host(llvm))
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    address = engine.get_function_address(tree_compiler.ENTRY)
    if not address:
        raise CompileError(f"the compiled trees have no {tree_compiler.ENTRY} function")
    return Forest(engine, _ENTRY_TYPE(address), num_feature)


def _feature_count(model_text: str) -> int:
    for line in model_text.splitlines():
        if line.startswith("max_feature_idx="):
            return int(line.partition("=")[2]) + 1
    raise CompileError("the model text has no max_feature_idx line")


@dataclass(frozen=True)
class _CachedCode:
    """One compiled model's code (shared library or object) on local disk, with its sha256 beside it."""

    folder: Path
    key: str

    @property
    def path(self) -> Path:
        return self.folder / f"{self.key}.bin"

    def read(self) -> bytes | None:
        """The cached code if present and intact, else None (it is then compiled again)."""
        try:
            code, digest = self.path.read_bytes(), self.path.with_suffix(".sha256").read_text().strip()
        except OSError:
            return None
        if hashlib.sha256(code).hexdigest() != digest:
            logger.warning("%s does not match its sha256; compiling the trees again", self.path)
            return None
        return code

    def write(self, code: bytes) -> None:
        """Store the code, object then digest, each by an atomic rename; a cache that fails is skipped."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.path, code)
            _write_atomically(self.path.with_suffix(".sha256"), hashlib.sha256(code).hexdigest().encode())
        except OSError as exc:
            logger.warning("compiled trees not cached in %s: %s", self.folder, exc)


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
