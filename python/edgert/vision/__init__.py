"""Vision layer shared by AMS, SRVC, RECL and OneAdapt: video I/O, bundled clips, models and metrics."""
from __future__ import annotations
