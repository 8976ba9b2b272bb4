"""Reference-model recipes: plain-torch architectures, virtual-scanner datasets, training loops and their CLI.

Where it sits: inside ``export/`` (the only package allowed to import torch). The recipes train the reference
detector and scorers from scratch on items drawn by ``sim/`` and conditioned by the runtime's own
``edge.condition`` code, compose model inputs with ``edge.condition.composer.compose`` (so training and runtime
agree), and pack the results with the export toolchain into ``models/``. Must not: be imported by the runtime,
download weights, or write outside the cache and output folders it is given.
"""
