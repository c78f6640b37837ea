"""Process safety for every command: Ctrl-C and SIGTERM deferred around writes (``interrupts``),
library noise kept off the terminal (``quiet``), the watchdog that records a killed job's end
(``guard``) and the error boundary that turns any exception into one line (``boundary``).

Nothing here knows about tasks, models or MLflow runs beyond a run id.
"""
