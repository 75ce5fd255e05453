"""The paper's training procedure on frozen features: VOC annotations (``voc``), the patch labelling rules
(``labels``), the feature cache (``cache``, ``cache_build``), training rows (``patches``), the loss and loop
(``loss``, ``train``), the dense/crop consistency term (``consistency``), AP (``evaluate``), the whole-image
baseline (``probe``) and CAM (``cam``), the VOC run the CLI performs (``voc_run``), presence calibration
(``calibrate``, ``calibration_fit``, ``reliability``) and the pointing game (``pointing``)."""
