"""``python -m scim_pipeline.emulator``: the emulator in its own process (benchmarks, staging)."""

from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scim_pipeline.emulator",
        description="Serve a Delinea-compatible SCIM emulator on loopback.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
