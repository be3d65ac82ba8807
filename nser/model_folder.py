"""The last touches on a saved model folder, so that it can be shared as it is.

- The feature extractor is :class:`feature_extraction_nser.NserFeatureExtractor` (shipped as remote code next to
  the model's): `pipeline(..., trust_remote_code=True)` then scales integer PCM arrays and warns about clips
  longer than the window, instead of reading int16 samples as floats and truncating in silence.
- No path of the machine that trained it: `config.json` names the backbone by its Hub id (or not at all).
- Every file readable by everyone who can read the folder (safetensors writes its weights with mode 0600).
"""

import json
import logging
import os
import shutil
from pathlib import Path

from feature_extraction_nser import NserFeatureExtractor

logger = logging.getLogger(__name__)

FEATURE_EXTRACTOR_CODE = Path(__file__).resolve().parents[1] / "feature_extraction_nser.py"


def is_local_path(name) -> bool:
    """True for what cannot be a Hub id (`owner/name` or `name`): an existing path, an absolute or home-relative
    path, `./x`, `../x`, or more than one `/`."""
    if not name:
        return False
    name = str(name)
    return (
        Path(name).expanduser().exists()
        or name.startswith(("/", "~", "./", "../", "\\"))
        or name.count("/") > 1
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")  # C:\...
    )


def add_feature_extractor(model_dir, feature_extractor) -> NserFeatureExtractor:
    """Replace the folder's feature extractor by an :class:`NserFeatureExtractor` with the same settings, and ship
    its code."""
    model_dir = Path(model_dir)
    extractor = NserFeatureExtractor.from_dict(feature_extractor.to_dict())
    extractor.save_pretrained(model_dir)
    shutil.copy(FEATURE_EXTRACTOR_CODE, model_dir / FEATURE_EXTRACTOR_CODE.name)
    return extractor


def remove_local_paths(model_dir, backbone_id: str | None = None) -> list[str]:
    """Drop (or replace by `backbone_id`, a Hub id) every `_name_or_path` in `config.json` that is a local path.
    Returns the keys changed."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    changed = []

    def clean(node, where):
        if isinstance(node, dict):
            for key in list(node):
                if key == "_name_or_path" and is_local_path(node[key]):
                    changed.append(f"{where}{key}")
                    if backbone_id and not is_local_path(backbone_id):
                        node[key] = backbone_id
                    else:
                        del node[key]
                else:
                    clean(node[key], f"{where}{key}.")

    clean(config, "")
    if changed:
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        logger.info("config.json: removed local paths from %s", changed)
    return changed


def make_readable(model_dir) -> None:
    """Files get the mode an ordinary file write gets (0644 under the usual umask 022), folders its directory
    counterpart: some writers (safetensors) create files with mode 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for root, folders, files in os.walk(model_dir):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def finalize_model_folder(model_dir, feature_extractor, backbone_id: str | None = None) -> None:
    """All of the above, on a folder written by `save_pretrained` (and the card, handler, results)."""
    add_feature_extractor(model_dir, feature_extractor)
    remove_local_paths(model_dir, backbone_id)
    make_readable(model_dir)
