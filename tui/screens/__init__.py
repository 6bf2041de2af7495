"""Screens of the TUI (Textual): one per mode, plus dialogs and the command palette provider."""
