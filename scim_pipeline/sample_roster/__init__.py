"""The bundled demo roster: 60 fictional users in six departments (with managers, two inactive), 8 groups and their
memberships, as CSV files. Demo mode syncs it into the embedded emulator."""

from pathlib import Path
from typing import Final

__all__ = ["SAMPLE_ROSTER"]

#: The folder holding users.csv, groups.csv and memberships.csv (a `FolderRosterSource` reads it).
SAMPLE_ROSTER: Final = Path(__file__).resolve().parent
