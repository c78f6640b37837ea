"""One module per ``memgen`` command: it composes the layers below into ``(metrics, objects)``.

``run`` (``memgen run`` and ``memgen train``), ``analyse``, ``pretrain``, ``sweep``, ``replicate``,
``compare``, ``runs``, ``ui``; ``preflight`` (checks before any command) and ``summary`` (what a
command prints at the end) serve them all. ``memgen/cli.py`` parses the command line and
dispatches here. A new command is a module here plus its entry in ``cli.COMMANDS``.
"""
