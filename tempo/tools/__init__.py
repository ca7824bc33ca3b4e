"""Operator tools behind the ``tempo`` command (``tempo.tools.cli.main``).

``tune`` recommends settings for this machine, ``soak`` proves them under
sustained overload, ``stress`` checks exactly-once delivery with many threads,
``bench`` compares tempo with the alternatives, ``demo`` runs the demo
pipeline. See docs/tools.md. Nothing here is imported by ``import tempo``.
"""
