"""Start Tablecast: `python run.py [--flags]` (see `python run.py --help`)."""

from __future__ import annotations

import os
import sys

from server.app import create_app
from server.logs import configure_logging
from server.runner import serve
from server.settings import Settings, SettingsError
from storage.table import TableLoadError

SHUTDOWN_TIMEOUT_S = 2.0


def main(argv: list[str]) -> int:
    try:
        settings = Settings.load(argv, os.environ)
    except SettingsError as exc:
        print(f"tablecast: bad setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        # Sockets are closed first; a client slow to finish the close handshake must not hold
        # up the final checkpoint.
        serve(create_app(settings), settings.host, settings.port, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    except TableLoadError as exc:
        print(f"tablecast: cannot load the table: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tablecast: cannot serve on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
