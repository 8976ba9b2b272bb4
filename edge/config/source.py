"""``source:`` section: where X-ray items come from. ``type`` selects both the schema and the class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from edge.config.base import EdgeBaseConfig
from edge.sources.bounds import DEFAULT_MAX_CHANNELS, DEFAULT_MAX_ITEM_BYTES, DEFAULT_MAX_LINES, InputLimits


class SimSourceConfig(EdgeBaseConfig):
    """The virtual scanner (demo, tests)."""

    type: Literal["sim"] = "sim"
    seed: int = Field(0, ge=0, description="random seed of the generated item stream")
    preset: Literal["parcels", "baggage", "electronics"] = Field("parcels", description="kind of items")
    threat_rate: float = Field(0.2, ge=0.0, le=1.0, description="fraction of items carrying a threat")
    items_per_minute: float = Field(30.0, gt=0, le=6000, description="how fast items arrive")
    max_items: int | None = Field(None, ge=1, description="stop after this many items; absent = run forever")


class FileSourceConfig(EdgeBaseConfig):
    """Limits of a source that reads item files: each file's declared size (array/image header, DICOM Rows and
    Columns, file size) is checked before it is decoded; an item over a limit is UNSCREENED ``oversize``
    (docs/frame-sources.md, "Input bounds"; defaults measured in docs/performance.md, "Memory per item")."""

    max_lines: int = Field(DEFAULT_MAX_LINES, ge=2, le=1_000_000,
                           description="most belt lines (image rows) per item and energy")
    max_channels: int = Field(DEFAULT_MAX_CHANNELS, ge=2, le=65_536,
                              description="most detector channels (image columns) per energy")
    max_item_bytes: int = Field(DEFAULT_MAX_ITEM_BYTES, ge=1024, le=8 * 1024**3,
                                description="most decoded bytes per item (both energies), and largest item file")

    @property
    def limits(self) -> InputLimits:
        """The limits as the sources take them."""
        return InputLimits(self.max_lines, self.max_channels, self.max_item_bytes)


class SpoolSourceConfig(FileSourceConfig):
    """A directory into which vendor software drops finished items (see docs/frame-sources.md)."""

    type: Literal["spool"] = "spool"
    directory: Path = Field(description="spool directory watched for completed items")
    poll_s: float = Field(0.2, gt=0, le=10, description="poll interval in seconds")
    done_directory: Path | None = Field(None, description="where processed items are moved; absent = deleted")
    done_max_mb: float = Field(2048.0, gt=0, le=10_000_000, description="most MB kept in done_directory; the "
                               "oldest items are deleted past it (a soak of 10,000 small items left 3.9 GB)")


class VotiSourceConfig(FileSourceConfig):
    """Durham VOTI raw line files (uint16, 640 channels, [low | high] per line, 30-line header)."""

    type: Literal["voti"] = "voti"
    directory: Path = Field(description="directory of .raw files, one item per file")
    channels: int = Field(640, ge=16, le=8192, description="detector channels per energy")
    header_lines: int = Field(30, ge=0, le=10_000, description="lines to skip at the start of each file")


class DicosSourceConfig(FileSourceConfig):
    """DICOS DX files: a low- and a high-energy DX image per item."""

    type: Literal["dicos"] = "dicos"
    directory: Path = Field(description="directory of DICOS DX files")


SourceConfig = Annotated[
    SimSourceConfig | SpoolSourceConfig | VotiSourceConfig | DicosSourceConfig, Field(discriminator="type")
]
