"""Export a trained encoder as a TF SavedModel plus what serving needs beside it.

```
<out>/saved_model.pb, variables/    serving_default: input_ids int32 [batch, seq] → {"embedding"}
<out>/tokenizer.json                the tokenizer the model was trained with
<out>/encoder_config.json           EncoderConfig (max_length and dim included)
<out>/metrics.json                  evaluation of this export
```
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.encoder import EncoderConfig, TextEncoder

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "encoder_config.json"
METRICS_FILE = "metrics.json"
SIGNATURE = "serving_default"
INPUT_NAME = "input_ids"
OUTPUT_NAME = "embedding"


def export_encoder(
    model: TextEncoder,
    out_dir: Path,
    tokenizer_file: Path,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the export to a sibling temp directory, then swap it into `out_dir`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    def serve(input_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(input_ids, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec([None, None], tf.int32, name=INPUT_NAME)],
    )
    archive.write_out(str(tmp), verbose=False)
    shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
    # "dim" is derived from the config, written so that readers need not know that.
    write_json(tmp / CONFIG_FILE, {**model.config.to_dict(), "dim": model.config.dim})
    write_json(tmp / METRICS_FILE, metrics or {})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def read_config(export_dir: Path) -> EncoderConfig:
    data = json.loads((export_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    data.pop("dim", None)
    return EncoderConfig(**data)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
