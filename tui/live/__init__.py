"""The TUI's session logic without Textual (the "live" layer: below cli and tutorial, above backends).

    logs.py     the bounded, thread-safe log store, the bring-up progress, the charon log tails
    reach.py    per node-pair reachability over the last minute (state, watch and ping sources)
    fault.py    a fault watch: inject a fault while polling strongSwan and pinging across, then report
    palette.py  the command palette's entries, as data (title, help, action name, arguments)
    text.py     small formatting shared by faces (gaps, ages)

The app (tui/app.py) and the CLI's fault commands both drive these; tests and benchmarks use them
without a terminal.
"""
