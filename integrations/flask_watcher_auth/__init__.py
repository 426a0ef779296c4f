"""Flask integration for watcher-auth."""
