"""``site:`` section: who this box is. The ids become part of MQTT topics and item ids."""

from __future__ import annotations

from pydantic import Field

from edge.config.base import EdgeBaseConfig

_ID = r"^[A-Za-z0-9_-]{1,64}$"


class SiteConfig(EdgeBaseConfig):
    """Identity of the site and scanner this box serves."""

    site_id: str = Field(description="site identifier, letters/digits/_/- (used in MQTT topics)", pattern=_ID)
    scanner_id: str = Field(description="scanner identifier, letters/digits/_/- (used in item ids)", pattern=_ID)
