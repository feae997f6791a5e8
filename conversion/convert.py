"""`kbrec convert` end to end: export dir → ONNX → checks → parity → published version.

Everything that can be checked before converting is checked first, and nothing
is written to the repository until the ONNX file has passed onnx.checker, the
ONNX Runtime contract check and the parity gate. The version directory is then
built and renamed into place by `kbrec.repository.publish_version`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from conversion.errors import ConversionError
from conversion.fp16 import (
    FP16_MODEL_FILE,
    Fp16Report,
    check_corpus,
    compare_fp16,
    convert_to_fp16,
    require_fp16,
)
from conversion.onnx_export import (
    check_onnx_contract,
    check_onnx_file,
    export_onnx,
    load_onnx_embedder,
)
from conversion.parity import (
    DEFAULT_TOLERANCE,
    ParityReport,
    measure_parity,
    parity_inputs,
    require_parity,
)
from conversion.signature import load_serving_function
from conversion.source import ExportDir, read_export_dir, saved_model_digest
from conversion.triton_config import LOADED_VERSIONS, render_config
from kbrec.atomic import write_text_atomic
from kbrec.repository import (
    CONFIG_FILE,
    METADATA_FILE,
    MODEL_FILE,
    MODEL_NAME,
    TOKENIZER_FILE,
    VersionMetadata,
    list_versions,
    model_dir,
    publish_version,
    version_dir,
)
from kbrec.tokenization import sha256_file

PYTHON_MODEL_FILE = "model.py"
PYTHON_MODEL_TEMPLATE = "templates/triton_python_model.py"
# A regular file where Python would create its bytecode cache directory: see the template.
PYCACHE_BLOCKER = "__pycache__"
PYCACHE_BLOCKER_TEXT = (
    "Placed by kbrec convert: a file, not a directory, so that Python cannot write\n"
    "bytecode here and Triton's poll mode never sees this version change.\n"
)
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ConvertOptions:
    saved_model: Path
    repository: Path
    model: str = MODEL_NAME
    backend: str = "onnxruntime"
    version: int | None = None
    tensorrt_fp16: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    fp16: bool = False  # also publish model_fp16.onnx, checked against FP32 on `corpus`
    corpus: Path = Path("data/corpus")


@dataclass(frozen=True)
class ConvertResult:
    version: int
    path: Path
    opset: int
    parity: ParityReport
    model_bytes: int
    fp16: Fp16Report | None = None


def convert(options: ConvertOptions, log: Callable[[str], None] = print) -> ConvertResult:
    """Convert and publish; raise ConversionError or RepositoryError with nothing published."""
    export = read_export_dir(options.saved_model)
    check_target(options)
    config_text = _render_config(options, export, fp16_model=fp16_config(options, log))
    serving = load_serving_function(export.path, export.dim)
    digest = saved_model_digest(export.path)
    with tempfile.TemporaryDirectory(prefix="kbrec-convert-") as tmp:
        onnx_path = Path(tmp) / MODEL_FILE
        opset = export_onnx(serving.function, onnx_path, export.dim, log=log)
        report = measure_parity(
            serving.embed,
            load_onnx_embedder(onnx_path),
            parity_inputs(export.tokenizer, export.max_length),
            options.tolerance,
        )
        log(
            f"parity max abs diff {report.max_abs_diff:.3g} over {len(report.cases)} cases "
            f"(tolerance {report.tolerance:g})"
        )
        require_parity(report)
        metadata = _metadata(export, digest, onnx_path, report, opset, options.backend)
        fp16 = None
        if options.fp16:
            fp16 = _convert_fp16(options, export, onnx_path, Path(tmp) / FP16_MODEL_FILE, log)
            metadata.extra["fp16"] = {
                "file": FP16_MODEL_FILE,
                "sha256": sha256_file(Path(tmp) / FP16_MODEL_FILE),
                **fp16.to_dict(),
            }
        # Config first: in poll mode Triton then never sees a version without a config.
        write_text_atomic(model_dir(options.repository, options.model) / CONFIG_FILE, config_text)
        log(f"wrote {CONFIG_FILE} (backend {options.backend})")
        version = publish_version(
            options.repository,
            lambda out: _write_version(out, onnx_path, export.tokenizer, metadata),
            model=options.model,
            version=options.version,
        )
    path = version_dir(options.repository, version, options.model)
    size = (path / MODEL_FILE).stat().st_size
    log(f"published version {version} at {path}")
    log(f"model size {size / 1e6:.1f} MB")
    if fp16 is not None:
        log(f"FP16 model size {(path / FP16_MODEL_FILE).stat().st_size / 1e6:.1f} MB")
    return ConvertResult(
        version=version, path=path, opset=opset, parity=report, model_bytes=size, fp16=fp16
    )


def _convert_fp16(
    options: ConvertOptions,
    export: ExportDir,
    onnx_path: Path,
    fp16_path: Path,
    log: Callable[[str], None],
) -> Fp16Report:
    """model_fp16.onnx beside the FP32 model: the same contract, and FP32's answers on the
    corpus (conversion.fp16), or ConversionError."""
    log("converting to FP16…")
    convert_to_fp16(onnx_path, fp16_path)
    check_onnx_file(fp16_path)
    check_onnx_contract(fp16_path, export.dim)
    log("FP16 checker ok, ORT ok")
    fp16 = compare_fp16(
        load_onnx_embedder(onnx_path),
        load_onnx_embedder(fp16_path),
        options.corpus,
        export.tokenizer,
        export.max_length,
        log,
    )
    log(fp16.describe())
    require_fp16(fp16)
    return fp16


def fp16_config(options: ConvertOptions, log: Callable[[str], None]) -> bool:
    """Whether config.pbtxt names the FP16 model: GPU Triton only, and only when every
    other version it loads next to the new one has one too (the file name is the
    model's, not a version's)."""
    if not (options.fp16 and options.backend == "onnxruntime"):
        return False
    others = list_versions(options.repository, options.model)[-(LOADED_VERSIONS - 1) :]
    without = [
        number
        for number in others
        if not (version_dir(options.repository, number, options.model) / FP16_MODEL_FILE).is_file()
    ]
    if without:
        log(
            f"config.pbtxt keeps {MODEL_FILE}: version(s) {without} have no {FP16_MODEL_FILE} "
            f"and Triton loads them with this config too"
        )
    return not without


def check_target(options: ConvertOptions) -> None:
    """The repository can take this version: checked before any slow work."""
    if not MODEL_NAME_PATTERN.fullmatch(options.model):
        raise ConversionError(f"model name {options.model!r} must be a plain directory name")
    repository = options.repository
    if repository.exists() and not repository.is_dir():
        raise ConversionError(f"repository {repository} is a file, not a directory")
    root = model_dir(repository, options.model)
    if root.exists() and not root.is_dir():
        raise ConversionError(f"{root} is a file, not a directory")
    if options.version is not None:
        if options.version <= 0:
            raise ConversionError(f"version must be a positive integer, got {options.version}")
        if options.version in list_versions(repository, options.model):
            raise ConversionError(
                f"version {options.version} already exists at "
                f"{version_dir(repository, options.version, options.model)}"
            )
    if not 0 <= options.tolerance < 1:
        raise ConversionError(f"tolerance must be in [0, 1), got {options.tolerance}")
    if options.fp16:
        try:
            check_corpus(options.corpus)
        except (OSError, ValueError) as exc:
            raise ConversionError(str(exc)) from exc


def _render_config(options: ConvertOptions, export: ExportDir, *, fp16_model: bool) -> str:
    try:
        return render_config(
            model=options.model,
            backend=options.backend,
            dim=export.dim,
            max_length=export.max_length,
            tensorrt_fp16=options.tensorrt_fp16,
            model_filename=FP16_MODEL_FILE if fp16_model else None,
        )
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc


def _metadata(
    export: ExportDir,
    digest: str,
    onnx_path: Path,
    report: ParityReport,
    opset: int,
    backend: str,
) -> VersionMetadata:
    import tensorflow as tf
    import tf2onnx

    return VersionMetadata(
        dim=export.dim,
        max_length=export.max_length,
        tokenizer_sha256=sha256_file(export.tokenizer),
        model_sha256=sha256_file(onnx_path),
        source={"saved_model": str(export.path), "digest": digest},
        parity=report.to_dict(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra={
            "onnx_opset": opset,
            "converted_for_backend": backend,
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
        },
    )


def _write_version(out: Path, onnx_path: Path, tokenizer: Path, metadata: VersionMetadata) -> None:
    shutil.copyfile(onnx_path, out / MODEL_FILE)
    if (onnx_path.parent / FP16_MODEL_FILE).is_file():
        shutil.copyfile(onnx_path.parent / FP16_MODEL_FILE, out / FP16_MODEL_FILE)
    shutil.copyfile(tokenizer, out / TOKENIZER_FILE)
    (out / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
    # Every version gets model.py, so switching config.pbtxt to the python backend
    # later never leaves an older loaded version without one.
    template = resources.files("conversion").joinpath(PYTHON_MODEL_TEMPLATE)
    (out / PYTHON_MODEL_FILE).write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    (out / PYCACHE_BLOCKER).write_text(PYCACHE_BLOCKER_TEXT, encoding="utf-8")
