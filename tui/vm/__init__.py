"""Machines for the Vagrant backend on this host: the offline box (box.py) and a libvirt the lab
runs itself, in a network namespace of its own, where the machine has none (hypervisor.py).

Headless, below the backends: tui.backends.vagrant uses it; it uses only tui.lab.
"""
