"""Measures: classification AP and mAP (``average_precision``), detection AP (``detection_ap``), the pointing
game (``pointing``), the reliability of presence probabilities (``reliability``) and the recall of candidate boxes
(``proposal_recall``)."""
