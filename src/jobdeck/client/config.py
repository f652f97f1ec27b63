"""Where the client finds the service and its token: arguments first, then the environment.

``JOBDECK_URL`` and ``JOBDECK_TOKEN`` are read when no argument is given. The command line
also falls back to the admin token that ``jobdeck serve`` keeps in its data directory
(:func:`read_admin_token`), so that a newcomer on the same machine needs no set-up.
"""

import os
from pathlib import Path

from jobdeck import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
URL_VARIABLE = "JOBDECK_URL"
TOKEN_VARIABLE = "JOBDECK_TOKEN"
ADMIN_TOKEN_FILE = "admin-token"
"""The file ``jobdeck serve`` writes the admin token to, in its data directory."""


def api_base(url: str) -> str:
    """The API root for a service URL: ``http://host:8000`` and ``.../api/v1`` both work."""
    base = url.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


def resolve_url(url: str | None = None) -> str:
    """The API root: ``url``, else ``$JOBDECK_URL``, else the local default."""
    return api_base(url or os.environ.get(URL_VARIABLE) or DEFAULT_URL)


def resolve_token(token: str | None = None) -> str | None:
    """The bearer token: ``token``, else ``$JOBDECK_TOKEN``, else None."""
    return token or os.environ.get(TOKEN_VARIABLE) or None


def read_admin_token(data_dir: Path) -> str | None:
    """The admin token a local ``jobdeck serve`` keeps in ``data_dir``, if it is readable."""
    try:
        token = (data_dir / ADMIN_TOKEN_FILE).read_text().strip()
    except OSError:
        return None
    return token or None


def client_headers(token: str | None) -> dict[str, str]:
    """The headers every request of a client carries."""
    headers = {"User-Agent": f"jobdeck-client/{__version__}", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers
