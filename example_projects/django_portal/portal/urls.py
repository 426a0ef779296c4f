"""The portal's pages: sign-in, the camera lists, and the Watcher account pages."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal import views

urlpatterns = [
    path("", views.home, name="home"),
    path("cameras/", views.cameras, name="cameras"),
    path("cameras/v2/", views.cameras_v2, name="cameras_v2"),
    path("cameras/all/", views.all_cameras, name="all_cameras"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Connect, disconnect and status pages: /watcher/connect/, /watcher/connect/v2/ (API v2),
    # /watcher/disconnect/, /watcher/.
    path("watcher/", include("django_watcher_auth.urls")),
]
