"""Resolve kohya/LyCORIS module names to the base checkpoint's module paths.

kohya-style files name a module ``<prefix>_<module path with '.' replaced by '_'>``; the prefix
names the model part (``lora_unet_`` the UNet or, for Flux/SD3 files written by sd-scripts, the
transformer; ``lora_te_``/``lora_te1_`` the first text encoder, ``lora_te2_`` the second;
``lycoris_`` a bare torch model). The module path is relative to that part, which sits in the
base under a parent prefix: ``unet.`` in a diffusers pipeline, ``model.diffusion_model.`` in a
single-file (original LDM) Stable Diffusion checkpoint, nothing in a checkpoint of the part alone.

The flattening loses information ('.' and '_' both become '_'), so names are resolved by
flattening the base's paths the same way and looking the file's names up: a flattened name that
two base modules share is reported, never guessed.
"""

from __future__ import annotations

from collections import defaultdict

# (prefix, the parent prefixes of that part in a base), most specific prefixes first.
PREFIXES = (
    ("lora_unet_", ("unet.", "transformer.", "model.diffusion_model.")),
    ("lora_transformer_", ("transformer.",)),
    ("lora_te1_", ("text_encoder.", "conditioner.embedders.0.transformer.")),
    ("lora_te2_", ("text_encoder_2.",)),
    ("lora_te3_", ("text_encoder_3.",)),
    ("lora_te_", ("text_encoder.", "cond_stage_model.transformer.")),
    ("lycoris_", ()),
)
PARENTS = tuple(sorted({p for _, parents in PREFIXES for p in parents}))

# CLIP text encoders saved by transformers 4 nest their modules in ``text_model.``, those saved
# by transformers 5 do not; kohya files of either era meet bases of either.
TEXT_MODEL = "text_model."


def has_kohya_prefix(name: str) -> bool:
    return name.startswith(tuple(p for p, _ in PREFIXES))


def flatten(path: str) -> str:
    return path.replace(".", "_")


class FlatIndex:
    """Base module paths (tensor names without ``.weight``) by (parent prefix, flattened rest).

    ``unet.down_blocks.0.proj`` is indexed as ("", ``unet_down_blocks_0_proj``) and as
    (``unet.``, ``down_blocks_0_proj``); paths under ``text_model.`` also without it.
    """

    def __init__(self, base_names: list[str]):
        self._paths: dict[tuple[str, str], set[str]] = defaultdict(set)
        for name in base_names:
            if not name.endswith(".weight"):
                continue
            path = name[: -len(".weight")]
            for parent in ("", *(p for p in PARENTS if path.startswith(p))):
                for flat in _variants(path[len(parent):]):
                    self._paths[(parent, flat)].add(path)

    def resolve(self, module: str) -> tuple[str | None, str | None]:
        """(base module path, None), or (None, why not) for the kohya module name ``module``."""
        prefix, parents = next(((p, c) for p, c in PREFIXES if module.startswith(p)), ("", ()))
        flat = module[len(prefix):]
        names = dict.fromkeys((flat, flat.removeprefix(flatten(TEXT_MODEL))))
        for key in [(parent, n) for n in names for parent in (*parents, "")]:
            found = self._paths.get(key)
            if found and len(found) > 1:
                return None, f"its name fits several base modules ({', '.join(sorted(found))}); not guessed"
            if found:
                return next(iter(found)), None
        return None, None


def _variants(path: str) -> list[str]:
    """Flattened forms a kohya name may have for ``path``: as is, and without ``text_model.``."""
    return list(dict.fromkeys((flatten(path), flatten(path.removeprefix(TEXT_MODEL)))))
