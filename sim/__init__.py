"""The virtual dual-energy X-ray scanner: physics, scenes, threats, ground truth, events and datasets.

Modules (bottom up): ``physics`` (materials, spectrum, sandwich detector, raw counts), ``shapes`` (thickness-map
primitives), ``objects`` / ``threats`` (libraries), ``scene`` (items and ground truth), ``wedge`` (step-wedge
calibration object), ``preview`` (simple pseudo-colour), ``coco``, ``events`` (belt/item/frame timeline),
``dataset`` (writing a dataset), ``cli`` (``edge sim …``), ``gallery`` (docs figure); ``camera`` and ``target``
(exit camera and cross-modal calibration target). See docs/sim.md.

Importing the package does nothing: no I/O, no heavy imports. The runtime never imports torch from here.
"""
