"""Configs are code: `get_config(preset)` files returning a locked `ml_collections.ConfigDict`.

One loader (`load`), one validation (`validate`) and one identity (`run_id`) serve every entry
point: `rsjax train`, `rsjax profile`, sweep files, workers and launchers.
"""

from rsjax.configs.identity import (
    IDENTITY_KEYS,
    RESUMABLE_KEYS,
    canonical,
    content_id,
    replicate_id,
    run_id,
    with_added_keys,
)
from rsjax.configs.loader import (
    BUNDLED,
    apply_overrides,
    from_saved,
    load,
    load_file,
    split_flags,
)
from rsjax.configs.validation import (
    DTYPES,
    EFFICIENTNET_FIELDS,
    MODEL_FIELDS,
    build_model,
    example_shape,
    pseudo_batch_size,
    validate,
)

__all__ = [
    "BUNDLED",
    "DTYPES",
    "EFFICIENTNET_FIELDS",
    "IDENTITY_KEYS",
    "MODEL_FIELDS",
    "RESUMABLE_KEYS",
    "apply_overrides",
    "build_model",
    "canonical",
    "content_id",
    "example_shape",
    "from_saved",
    "load",
    "load_file",
    "pseudo_batch_size",
    "replicate_id",
    "run_id",
    "split_flags",
    "validate",
    "with_added_keys",
]
