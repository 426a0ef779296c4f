"""Django integration for watcher-auth."""
