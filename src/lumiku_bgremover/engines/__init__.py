"""Background-removal engines (image in, alpha matte out) and their tier router.

The local ONNX engine lives in `lumiku_bgremover.engines.local` and is not imported
here: it needs the optional `local` extra (numpy, onnxruntime).
"""

from lumiku_bgremover.engines.base import Engine, EngineConfigError, EngineError, ModelNotFound
from lumiku_bgremover.engines.fake import FakeEngine
from lumiku_bgremover.engines.router import (
    EngineCall,
    EngineRouter,
    UnavailableEngine,
    build_router,
)
from lumiku_bgremover.engines.weights import (
    WeightsFetchError,
    WeightsIntegrityError,
    WeightsUnavailable,
    resolve_weights,
)

__all__ = [
    "Engine",
    "EngineCall",
    "EngineConfigError",
    "EngineError",
    "EngineRouter",
    "FakeEngine",
    "ModelNotFound",
    "UnavailableEngine",
    "WeightsFetchError",
    "WeightsIntegrityError",
    "WeightsUnavailable",
    "build_router",
    "resolve_weights",
]
