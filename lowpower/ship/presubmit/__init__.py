"""The pre-submission check of a ``solution.pyz``: static checks of the archive (``static``), a run as the
referee runs it (``run``), the verdict table (``report``) and the command (``cli``)."""
