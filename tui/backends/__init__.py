"""Adapters: the Backend interface and its netns and Vagrant implementations. No Textual here."""
