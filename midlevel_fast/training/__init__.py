"""The paper's training procedure on frozen features: the patch labelling rules (``labels``), training rows
(``patches``), the loss and loop (``loss``, ``train``; the loop's parts in ``epochs`` and ``steps``), evaluation
on the cached validation set (``evaluate``), the dense/crop consistency term (``consistency``), weak labels
(``weak``, ``pooling``), the unfrozen top (``unfreeze``), and fitting the head's calibration and box regression
(``calibration_fit``, ``box_regression_fit``). For a detector: proposal labels by IoU (``detection_labels``)
and hard-negative mining (``hard_negatives``)."""
