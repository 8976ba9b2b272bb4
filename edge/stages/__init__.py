"""Pipeline stages, one module each; a stage imports records, its config and ports, never another stage."""
