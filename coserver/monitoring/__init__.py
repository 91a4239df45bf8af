"""Monitoring files shipped with coserver: the Prometheus alert rules for the controllers' metrics.

Why a package: the rules travel with the code whose metric names they use (package data), and
`python -c 'import coserver.monitoring as m; print(m.RULES)'` finds the installed copy to hand to
Prometheus (README "Metrics and alerts"). Nothing here is imported by the controller.
"""

from pathlib import Path

#: The alert rules (Prometheus rule file; tested with promtool in tests/monitoring).
RULES = Path(__file__).parent / "coserver-rules.yml"
