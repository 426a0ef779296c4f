"""The portal's pages: sign-in, the camera list, and the Watcher account pages."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal import views

urlpatterns = [
    path("", views.home, name="home"),
    path("cameras/", views.cameras, name="cameras"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Connect, disconnect and status pages: /watcher/connect/, /watcher/disconnect/, /watcher/.
    path("watcher/", include("django_watcher_auth.urls")),
]
