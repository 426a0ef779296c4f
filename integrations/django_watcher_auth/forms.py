"""The connect form."""

from __future__ import annotations

import unicodedata

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

__all__ = ["ConnectForm"]

MAX_USERNAME = 150
MAX_PASSWORD = 1024
MAX_NEXT = 2048


def _no_control_characters(value: str) -> None:
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValidationError(_("Remove the invisible control characters."), code="control")


def _no_colon(value: str) -> None:
    # HTTP Basic auth splits "user:password" at the first colon.
    if ":" in value:
        raise ValidationError(_("A Watcher username cannot contain a colon."), code="colon")


class ConnectForm(forms.Form):
    """A Watcher username and password, and where to go afterwards.

    The password is only passed on to Watcher's login; it is never stored or shown again.
    """

    username = forms.CharField(
        label=_("Watcher username"),
        max_length=MAX_USERNAME,
        validators=[_no_control_characters, _no_colon],
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    password = forms.CharField(
        label=_("Watcher password"),
        max_length=MAX_PASSWORD,
        strip=False,
        validators=[_no_control_characters],
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    next = forms.CharField(
        required=False,
        max_length=MAX_NEXT,
        validators=[_no_control_characters],
        widget=forms.HiddenInput,
    )
