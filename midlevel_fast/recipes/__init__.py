"""What the command line's commands do: train and evaluate on VOC (``voc_run``), on image tags (``tags_run``),
on box samples (``box_task``), and calibrate a head (``calibrate``)."""
