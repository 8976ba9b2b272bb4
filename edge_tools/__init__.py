"""The tools around the screening service: evaluation, benchmarks, on-site refit, the demo, the MQTT watcher and
the DICOS command line.

Why a package of its own: ``edge/`` is what systemd runs on the box, and it must not carry the virtual scanner,
the simulated firmware or the evaluation harness. Tools import ``edge``; ``edge`` never imports a tool (its
command line mounts the tool commands lazily by module name, see ``edge.cli``).
"""
