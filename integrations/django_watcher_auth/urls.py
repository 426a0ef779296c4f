"""``path("watcher/", include("django_watcher_auth.urls"))``: namespace ``django_watcher_auth``.

Names: ``status`` (``""``), ``connect`` (``"connect/"``), ``connect_v2`` (``"connect/v2/"``,
an API v2 user key or password), ``disconnect`` (``"disconnect/"``).
"""

from __future__ import annotations

from django.urls import path

from django_watcher_auth import views

__all__ = ["app_name", "urlpatterns"]

app_name = "django_watcher_auth"

urlpatterns = [
    path("", views.status, name="status"),
    path("connect/", views.connect, name="connect"),
    path("connect/v2/", views.connect_v2, name="connect_v2"),
    path("disconnect/", views.disconnect, name="disconnect"),
]
