"""The one interface over TransformerLens: `HookedTransformer` (3.x) and `TransformerBridge`
(4.x), for the families in docs/your-model.md (sequential, parallel, post-norm and
mixture-of-experts blocks). Everything version- or
architecture-specific about TransformerLens lives in this package and nowhere else."""

from tl_clt.lens.adapter import TL_MAJOR, HookedRootModule, HookPoint, Lens
from tl_clt.lens.build import from_hf, load_model, tiny_model

__all__ = [
    "TL_MAJOR",
    "HookPoint",
    "HookedRootModule",
    "Lens",
    "from_hf",
    "load_model",
    "tiny_model",
]
