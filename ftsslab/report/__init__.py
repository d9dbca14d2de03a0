"""A run's or a capture's report: the model (``model``), and one self-contained HTML page
drawn from it (``render``, with its SVG in ``svg``)."""
