"""Across-seed statistics (``aggregate``) and the claims scorecard (``claims``): the paper's
findings as tests with verdicts. Pure computation; ``memgen replicate`` itself is
:mod:`memgen.commands.replicate`."""
