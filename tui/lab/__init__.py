"""The headless core: model, naming, templates, lab state and events. Imports no Textual."""
