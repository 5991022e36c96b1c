"""The declared segmentation model: schema, loading, compiling, placing, analysis, formats.

Typical use::

    model = load_model("detector/assets/models/three_tier_vpc.yaml")
    compiled = compile_model(model)
    placement = compiled.place(event)      # zones, verdict, rule, reason
"""

from detector.model.compile import (
    VERDICTS,
    CompiledModel,
    CompiledRule,
    Placement,
    Verdict,
    compile_model,
    enrich,
)
from detector.model.load import (
    ModelError,
    ModelProblem,
    SegmentationModel,
    load_model,
    model_from_data,
    model_from_text,
)
from detector.model.schema import ANY_ZONE, INTERNET, Flow, ModelDocument, Zone

__all__ = [
    "ANY_ZONE",
    "INTERNET",
    "VERDICTS",
    "CompiledModel",
    "CompiledRule",
    "Flow",
    "ModelDocument",
    "ModelError",
    "ModelProblem",
    "Placement",
    "SegmentationModel",
    "Verdict",
    "Zone",
    "compile_model",
    "enrich",
    "load_model",
    "model_from_data",
    "model_from_text",
]
