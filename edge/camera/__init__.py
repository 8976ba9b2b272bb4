"""Exit camera at runtime: capture into a ring buffer, pick the frame an item is under, map X-ray results onto it.

Modules: ``calibration`` (the calibration file: load, save atomically with history), ``mapping`` (X-ray px →
camera px through belt travel, the homography and the lens model), ``ring`` and ``capture`` (the capture thread
and its ring buffer), ``select`` (frame choice from belt travel), ``overlay`` (JPEG overlays). Nothing here blocks
the screening path: a missing camera yields ``None`` and a reason, never a wait.
"""
