"""``edge bench``: where the time goes in the screening pipeline, measured on virtual-scanner items.

Where it sits: an operator/engineering tool beside the service, not part of it. It builds the same stages the
service runs (``edge.runtime.build_stages``) over recorded virtual-scanner items and reports per-stage and
end-to-end latency, throughput, memory, model load/warm-up time, cold start to READY and a roofline column per
model, for each backend / precision / scorer batch size. Modules:

    items.py      render items once to disk and replay them through the ``FrameSource`` port
    stats.py      percentiles, RSS sampling, load average
    roofline.py   MACs counted from the ONNX graph; the machine's measured matmul peak
    runner.py     one configuration, in its own process (clean peak RSS): load, warm, run, measure
    coldstart.py  ``edge run`` from exec to READY=1 on a NOTIFY_SOCKET we bind
    report.py     JSON record and Markdown table
    cli.py        ``bench_command`` (mounted as ``edge bench``)

Must not: import torch or ``export/`` (the PyTorch-eager comparison lives in ``benchmarks/``), or run in the
test suite as a timed assertion.
"""
