"""bfloat16 mixed precision as one switch (gin `train.mixed_precision`).

Under "mixed_bfloat16" Keras layers keep float32 variables and compute in bfloat16. What must
stay float32 already does, by construction in the models and losses: embeddings are cast to
float32 before L2 normalisation, the logit scale/bias variables are float32 and never autocast,
and the contrastive loss and its logits are computed in float32. bfloat16 has float32's exponent
range, so no loss scaling is needed.
"""
import contextlib
from typing import Optional

import keras

POLICIES = (None, "float32", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy(name: Optional[str]):
    """Builds models inside under Keras dtype policy `name` (None: leave the current one).

    Layers keep the policy they were created with; the global policy is restored on exit.
    """
    if name not in POLICIES:
        raise ValueError(f"train.mixed_precision={name!r} is not one of {POLICIES}")
    previous = keras.config.dtype_policy()
    if name is not None:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
