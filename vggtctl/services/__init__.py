"""Services: plain functions and dataclasses behind the CLI. They never print; they report through a
``Progress`` or ``logging``, return typed results and raise ``VggtctlError`` subclasses with a hint."""
