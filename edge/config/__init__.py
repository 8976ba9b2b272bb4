"""Configuration: one YAML file, one module per section, errors that name file, line and key."""

from edge.config.root import DEFAULT_CONFIG_PATH, EdgeConfig, load_config

__all__ = ["DEFAULT_CONFIG_PATH", "EdgeConfig", "load_config"]
