#!/bin/sh
# Installs Debian's Chromium for the browser tests when it is missing and we run as root.
# Anywhere else it does nothing: the browser tests then skip with the reason (or fail under CI).
set -u

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "ensure_chromium: /usr/bin/chromium is missing and this is not root; browser tests will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: /usr/bin/chromium is missing and there is no apt-get; browser tests will skip"
    exit 0
fi

echo "ensure_chromium: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; then
    echo "ensure_chromium: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
else
    # The browser tests report the missing browser themselves (and fail when CI is set).
    echo "ensure_chromium: apt-get could not install chromium"
fi
exit 0
