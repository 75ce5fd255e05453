"""Readers of annotated images: VOC XML (``voc``), image tags in VOC, ImageFolder, CSV or JSON form (``tags``),
and box samples for the box task (``box_samples``). Every error names the file and what to do."""
