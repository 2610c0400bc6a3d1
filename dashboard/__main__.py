"""``python -m dashboard``: the live dashboard at http://127.0.0.1:RIVERBED_DASHBOARD_PORT."""

from __future__ import annotations

import logging
import sys

from dashboard.app import create_app
from riverbed.logs import command_settings


def main() -> int:
    settings = command_settings()
    # Flask's development server logs every request at INFO: quiet by default.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(settings)
    print(f"dashboard: http://127.0.0.1:{settings.dashboard_port}", flush=True)
    app.run(host="127.0.0.1", port=settings.dashboard_port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
