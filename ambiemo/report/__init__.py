"""The report: the study's figures and the manuscript's generated tables and numbers.

Enters: the tidy tables of ``ambiemo.scoring`` and ``ambiemo.stats`` (read from ``results/``).
Leaves: ``figures/`` (``figures``, one visual encoding from ``style``) and ``paper/generated/``
(``paper``, written through ``latex``). Figures read tables; they compute no statistic of their own.
"""
