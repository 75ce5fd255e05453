"""Measures: classification AP and mAP (``average_precision``), detection AP (``detection_ap``), the pointing
game (``pointing``) and the reliability of presence probabilities (``reliability``)."""
