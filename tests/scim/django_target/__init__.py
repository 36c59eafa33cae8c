"""A minimal Django project serving django-scim2 (an independent SCIM server implementation) for the interop tests.

django-scim2 needs a user and a group model carrying its SCIM columns; :mod:`.models` declares them, :func:`app`
configures Django once per process (SQLite in a temporary file, so the test thread and the server thread see the
same data), creates the tables and returns the ASGI application."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

_APP: Any = None


def app() -> Any:
    """The django-scim2 ASGI application, its tables created (configured once per process)."""
    global _APP
    if _APP is not None:
        return _APP
    import django
    from django.conf import settings

    database = Path(tempfile.mkdtemp(prefix="django-scim2-")) / "scim.sqlite3"
    settings.configure(
        DEBUG=False,
        SECRET_KEY="interop-tests-only",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django_scim", "tests.scim.django_target"],
        AUTH_USER_MODEL="django_target.ScimUser",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        ROOT_URLCONF="tests.scim.django_target.urls",
        MIDDLEWARE=["tests.scim.django_target.anonymous.AnonymousClient"],
        USE_TZ=True,
        SCIM_SERVICE_PROVIDER={
            "NETLOC": "127.0.0.1",
            "GROUP_MODEL": "tests.scim.django_target.models.ScimGroup",
            "GET_IS_AUTHENTICATED_PREDICATE": "tests.scim.django_target.anonymous.everyone",
            "AUTHENTICATION_SCHEMES": [],
        },
    )
    django.setup()
    from django.core.asgi import get_asgi_application
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    _APP = get_asgi_application()
    return _APP


def stored_users() -> list[dict[str, Any]]:
    """The users as django-scim2 stores them (read from the database, not over HTTP)."""
    from .models import ScimUser

    return [
        {"username": u.username, "first_name": u.first_name, "last_name": u.last_name, "email": u.email}
        for u in ScimUser.objects.order_by("id")
    ]
