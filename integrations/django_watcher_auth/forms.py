"""The connect forms: a password for API v3; an API key or a password for API v2."""

from __future__ import annotations

import unicodedata

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from watcher_auth import ConfigurationError
from watcher_auth.v2 import check_secret

__all__ = ["ConnectForm", "ConnectV2Form"]

MAX_USERNAME = 150
MAX_PASSWORD = 1024
MAX_API_KEY = 1024
MAX_NEXT = 2048


def _no_control_characters(value: str) -> None:
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValidationError(_("Remove the invisible control characters."), code="control")


def _no_control_codes(value: str) -> None:
    # For passwords: format characters (the joiner inside an emoji sequence...) are part of
    # what people type; only control codes (NUL, ESC, line breaks) are refused.
    if any(unicodedata.category(ch) == "Cc" for ch in value):
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
        validators=[_no_control_codes],
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    next = forms.CharField(
        required=False,
        max_length=MAX_NEXT,
        validators=[_no_control_characters],
        widget=forms.HiddenInput,
    )


def _header_safe(value: str) -> None:
    # A user key and its login travel in HTTP headers, which take printable ASCII only.
    try:
        check_secret(value, "value")
    except ConfigurationError:
        raise ValidationError(
            _("Use only letters, digits and punctuation, without spaces around them."),
            code="header",
        ) from None


class ConnectV2Form(forms.Form):
    """A Watcher username with either an API key from the Watcher profile or a password.

    ``mode`` says which: ``"api_key"`` (the default) stores the key after Watcher confirmed
    it; ``"password"`` logs in to API v2 once and stores only the session. Neither the key
    nor the password is ever shown again; the field of the other mode is ignored.
    """

    MODE_API_KEY = "api_key"
    MODE_PASSWORD = "password"

    username = forms.CharField(
        label=_("Watcher username"),
        max_length=MAX_USERNAME,
        validators=[_no_control_characters],
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    mode = forms.ChoiceField(
        label=_("Sign in with"),
        choices=[
            (MODE_API_KEY, _("the API key from my Watcher profile")),
            (MODE_PASSWORD, _("my Watcher password")),
        ],
        initial=MODE_API_KEY,
        widget=forms.RadioSelect,
    )
    api_key = forms.CharField(
        label=_("Watcher API key"),
        required=False,
        max_length=MAX_API_KEY,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )
    password = forms.CharField(
        label=_("Watcher password"),
        required=False,
        max_length=MAX_PASSWORD,
        strip=False,
        validators=[_no_control_codes],
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    next = forms.CharField(
        required=False,
        max_length=MAX_NEXT,
        validators=[_no_control_characters],
        widget=forms.HiddenInput,
    )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        mode = data.get("mode")
        if mode == self.MODE_API_KEY:
            data.pop("password", None)
            if not data.get("api_key"):
                self.add_error("api_key", _("Enter the API key from your Watcher profile."))
            else:
                for field in ("username", "api_key"):
                    if data.get(field):
                        try:
                            _header_safe(str(data[field]))
                        except ValidationError as error:
                            self.add_error(field, error)
        elif mode == self.MODE_PASSWORD:
            data.pop("api_key", None)
            if not data.get("password"):
                self.add_error("password", _("Enter your Watcher password."))
        return data
