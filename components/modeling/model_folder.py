"""Refuse a model folder before loading it, naming the file and the rule.

Loading a Hugging Face folder can run code that came with it: pickled weights
(``pytorch_model.bin``) execute whatever the pickle says when unpickled, and a config with
``auto_map`` asks for the folder's own Python classes. Both are refused unless the user opts
in (``reference.allow_pickle``, ``reference.trust_remote_code``); a folder that is missing,
has no config or holds corrupted safetensors is refused here too, not deep inside
``from_pretrained`` with a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelFolderError(UserError, ValueError):
    """A model folder that cannot, or may not, be loaded."""


def check_model_folder(location: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
    """Pass silently for a loadable folder, or a hub name while the hub is reachable."""
    folder = Path(location)
    if not folder.exists():
        if _hub_offline():
            raise ModelFolderError(f"{folder}: no such model folder (and the Hugging Face hub is offline)")
        return
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: a model is a folder saved with save_pretrained, not a file")
    config = _config(folder / "config.json")
    if "auto_map" in config and not trust_remote_code:
        raise ModelFolderError(f"{folder / 'config.json'}: auto_map asks to run the folder's own Python code; "
                               "refused unless reference.trust_remote_code: true")
    weights = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickles and not weights and not allow_pickle:
        raise ModelFolderError(f"{folder}: weights only as pickles {pickles}, which can run code when loaded; "
                               "convert them to safetensors, or set reference.allow_pickle: true if you trust them")
    if not weights and not pickles:
        raise ModelFolderError(f"{folder}: no weights (*.safetensors)")
    for file in weights:
        _check_safetensors(file)


def _config(path: Path) -> dict:
    if not path.is_file():
        raise ModelFolderError(f"{path.parent}: no config.json (not a folder saved with save_pretrained)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{path}: not a JSON config ({err})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path}: not a JSON object")
    return config


def _check_safetensors(file: Path) -> None:
    """Reads the header only: its size, JSON and that the data it describes is all there."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), "pt"):
            pass
    except SafetensorError as err:
        raise ModelFolderError(f"{file}: corrupted safetensors file ({err})") from None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE
