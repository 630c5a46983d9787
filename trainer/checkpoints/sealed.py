"""What a checkpoint seals inside it besides the weights: the resolved config and the dataset it was trained with
(and the model card quoting them), and `trained_config`, which hands what was trained to every later stage."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.config import Config
from trainer.config_file import AUTO, auto_keys, load_config, save_config
from trainer.dataset import load_manifest
from trainer.dotted import assign, lookup
from trainer.errors import TrainerError
from trainer.model_card import CARD, checkpoint_card

TRAINED_CONFIG = "trainer_config.yaml"  # the fully resolved config the checkpoint was trained with, sealed inside it
TRAINED_DATA = "trainer_data.json"  # the processed dataset's content hash and split sizes, sealed beside it
# What a checkpoint decides for every later stage (evaluate, export, vLLM), whatever config file they are given: the
# function it trained. Everything else (where things are, limits, export dtype) comes from the command line.
TRAINED_KEYS = ("model.name_or_path", "model.revision", "model.tiny", "model.lora", "model.quantization")
TRAINED_KEYS += ("model.chat_template", "training.precision")
# Taken from the checkpoint too, but a --set may change them: the run's name names its exported model and card, so a
# tiny checkpoint exported without its config is not filed under default.yaml's 7B run name.
RUN_KEYS = ("training.run_name",)


def seal_config(config: Config, folder: Path) -> None:
    """Write the config and the dataset a checkpoint was trained with into it (before its manifest, which then lists
    them): a resumed run compares against them. Its model card quotes them, in place of PEFT's template; the run's
    folder gets the same card, as the newest checkpoint's."""
    save_config(config, folder / TRAINED_CONFIG)
    manifest = load_manifest(config.data.output_dir) or {}
    data = {"content_hash": manifest.get("content_hash"), "counts": manifest.get("counts")}
    (folder / TRAINED_DATA).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    card = checkpoint_card(config, folder, data)
    (folder / CARD).write_text(card, encoding="utf-8")
    (folder.parent / CARD).write_text(card, encoding="utf-8")


def trained_data(checkpoint: Path) -> dict | None:
    """What `seal_config` recorded of the checkpoint's dataset, or None for a checkpoint made before it did."""
    path = checkpoint / TRAINED_DATA
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _contradiction(given: dict, trained: dict, key: str) -> str | None:
    """The first key at or under `key` whose given value asks for something other than what was trained: neither
    the sealed value (resolved when training began) nor `auto` where the key's type admits it; None if there is
    none."""
    mine, theirs = lookup(given, key), lookup(trained, key)
    if isinstance(mine, dict) and isinstance(theirs, dict):
        inner = (_contradiction(given, trained, f"{key}.{part}") for part in sorted(mine.keys() | theirs.keys()))
        return next((found for found in inner if found), None)
    asks_for_nothing = mine == AUTO and key in auto_keys()
    return None if mine == theirs or asks_for_nothing else key


def trained_config(config: Config, checkpoint: Path, warn=print) -> Config:
    """`config` with every TRAINED_KEYS value taken from the config sealed in `checkpoint`: the one place evaluate,
    export and the vLLM backend learn what was trained. An explicit `--set` that contradicts it is an error. RUN_KEYS
    come from the checkpoint too, unless a `--set` names them. A `--set` of `auto`, or of the sealed value, asks
    for nothing else and is accepted."""
    sealed = checkpoint / TRAINED_CONFIG
    if not sealed.is_file():
        warn(f"note: {checkpoint} holds no {TRAINED_CONFIG} (made before checkpoints carried their config); "
             "using the given config's model settings")  # fmt: skip
        return config
    trained = load_config(sealed).model_dump(mode="json")
    given = config.model_dump(mode="json")
    for key, given_as in config.overrides.items():
        for trained_key in TRAINED_KEYS:
            inside = trained_key == key or trained_key.startswith(key + ".") or key.startswith(trained_key + ".")
            # Only the part of the override that the checkpoint decides: `--set training={…}` sets other keys too.
            differs = _contradiction(given, trained, max(key, trained_key, key=len)) if inside else None
            if differs:
                raise TrainerError(
                    f"{given_as}: {checkpoint} was trained with {differs}={lookup(trained, differs)!r}; evaluate "
                    "and export use what the checkpoint was trained with, so leave it out"
                )
    for key in TRAINED_KEYS:
        assign(given, key, lookup(trained, key))
    for key in RUN_KEYS:
        if key not in config.overrides:
            assign(given, key, lookup(trained, key))
    merged = Config.model_validate(given)
    merged._overrides = config.overrides
    return merged
