"""The web middleware and feedback helpers import no framework and nothing heavy until used."""

from __future__ import annotations

import subprocess
import sys


def test_middleware_modules_import_no_framework_or_storage() -> None:
    code = (
        "import sys; import wasteaudit.integrations.asgi, wasteaudit.integrations.wsgi, wasteaudit.integrations.feedback, wasteaudit.integrations.django; "
        "heavy = [m for m in ('starlette', 'fastapi', 'flask', 'werkzeug', 'django', 'asgiref', 'sqlalchemy', 'torch') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
