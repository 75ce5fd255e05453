"""Readers of annotated images: VOC XML (``voc``), image tags in VOC, ImageFolder, CSV or JSON form (``tags``),
and box samples for the box task (``box_samples``; COCO JSON in ``coco``, the sample and its checks in
``box_checks``). Every error names the file and what to do."""
