"""Reporting: the clause registry (``registry``), certification verdicts (``verdicts``)
and the ``results.json`` writer (``results``)."""
