"""Django integration for watcher-auth: each portal user's own Watcher API session.

Set up::

    INSTALLED_APPS += ["django_watcher_auth"]
    # after AuthenticationMiddleware:
    MIDDLEWARE += ["django_watcher_auth.middleware.WatcherMiddleware"]
    WATCHER_AUTH = {"URL": "https://watcher.example.com", "STORE": "db"}
    urlpatterns += [path("watcher/", include("django_watcher_auth.urls"))]

then, in a view::

    from django_watcher_auth.decorators import watcher_required

    @watcher_required
    def cameras(request):
        streams = request.watcher.get("streams").json()["streams"]
        ...

API v2 (``/vsaas/api/v2``): ``request.watcher_v2`` carries the user's API v2 session or user
key (connected at ``reverse("django_watcher_auth:connect_v2")``; guard views with
``@watcher_v2_required``), and ``request.watcher_system`` carries Watcher's system key
(``WATCHER_AUTH["SYSTEM_API_KEY"]``, super-admin rights: staff-only views)::

    @watcher_v2_required
    def my_cameras(request):
        return JsonResponse(request.watcher_v2.get("cameras").json(), safe=False)

Failures are answered by :mod:`watcher_auth.web`'s policy (a redirect to the connect page,
or an error page / JSON with a stable ``error`` code; never a 500).

Modules: :mod:`~django_watcher_auth.conf` (settings, ``get_manager()``),
:mod:`~django_watcher_auth.middleware`, :mod:`~django_watcher_auth.decorators`,
:mod:`~django_watcher_auth.mixins`, :mod:`~django_watcher_auth.stores`,
:mod:`~django_watcher_auth.signals`, :mod:`~django_watcher_auth.accounts`,
:mod:`~django_watcher_auth.checks`. Management commands: ``watcher_status``,
``watcher_disconnect <username>``, ``watcher_check``.
"""

__all__: list[str] = []
