"""Images: the content store, layers, and image configs."""

from __future__ import annotations
