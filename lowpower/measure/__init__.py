"""Measuring on this machine: the zoo's cost (``bench``), packages against each other (``compare``,
``pareto``, ``variants``, ``sample``, ``solution``), input-size sweeps (``sweep``), compression pipelines
(``pipeline``), the demo's summary (``demo``), and the helpers they share: FLOP counting (``flops``) and
the machine name, CSV and markdown writers of the reports (``report``)."""
