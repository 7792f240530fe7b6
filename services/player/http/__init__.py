"""The player's HTTP application: the API, playback and the status page. Every request is
scoped to one business: another business's call answers 404, exactly like a call that does
not exist."""
