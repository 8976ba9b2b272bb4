"""Frame sources (``edge.ports.FrameSource``): spool directory, VOTI raw files, the virtual scanner."""
