"""The control-room console (``edge console``): a separate service on the control-room machine.

It listens to the MQTT topics of one or many boxes, stores every decision, picture, box status and operator
verdict in its database (SQLite or PostgreSQL), serves the operators' page over HTTPS (live alarm queue,
verdict buttons, history, lane health) and sends each verdict back to its box through a durable outbox
(docs/control-room.md). It shares no code with the box's runtime: it reads the box's published payloads and
uses only the config loader and the error vocabulary of ``edge``.
"""
