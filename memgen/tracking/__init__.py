"""MLflow I/O and nothing else: the store (``store``), one run's writes (``run``: the single way
into MLflow), reading runs back (``load``, ``search``), stale RUNNING runs (``stale``) and links
to the UI (``links``). Reports live in :mod:`memgen.reporting`, Lightning callbacks in
:mod:`memgen.training`."""
