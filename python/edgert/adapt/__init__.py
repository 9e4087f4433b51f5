"""OneAdapt: configuration knobs adapted by gradient ascent with DNNGrad x InputGrad.

* :mod:`~edgert.adapt.knobs`: knobs normalised to ``[0, 1]`` (more resource upwards), discrete values snapped.
* :mod:`~edgert.adapt.ascent`: the controller (one input-only backward per interval, InputGrad by re-rendering,
  ResourceGrad by definition, gradient ascent on accuracy minus lambda x resource) and the pipeline protocol.
* :mod:`~edgert.adapt.utility`: the output utilities (detection, segmentation, voice activity).
* pipelines: :mod:`~edgert.adapt.codec` (resolution, CRF, region quality through libx264; the DNN is person
  segmentation, :mod:`~edgert.adapt.segmentation`, or MTCNN faces, :mod:`~edgert.adapt.detection`),
  :mod:`~edgert.adapt.filtering` (Reducto-style frame filtering), :mod:`~edgert.adapt.audio` (sample rate).
* :mod:`~edgert.adapt.baselines` and :mod:`~edgert.adapt.evaluate` (``edgert adapt eval``).
"""
from __future__ import annotations

from edgert.adapt.ascent import (
    AdaptConfig,
    AdaptError,
    IntervalRecord,
    OneAdapt,
    Pipeline,
    Rendered,
    SchemeResult,
    dnn_grad,
    summarise,
)
from edgert.adapt.knobs import Knob, KnobError, KnobSpace

__all__ = ["AdaptConfig", "AdaptError", "IntervalRecord", "Knob", "KnobError", "KnobSpace", "OneAdapt", "Pipeline",
           "Rendered", "SchemeResult", "dnn_grad", "summarise"]
