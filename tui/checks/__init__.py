"""The check catalog: each check = what to run + how to judge the output. Imports no Textual."""
