"""Tutorial mode's headless core: steps (Markdown in assets/tutorial), their actions, progress.

The TUI's lesson panel and the tests walk the same steps; nothing here imports Textual.
"""
