"""Widgets of the TUI (Textual): the tunnel matrix, the reachability timeline, the lab bar."""
