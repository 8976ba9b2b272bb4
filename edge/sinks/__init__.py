"""Result sinks other than MQTT (which lives in ``edge.publish``): the audit store and an in-memory sink."""
