"""Files in and out: images read into RGB arrays (``image_io``), heat-map overlays and their names (``overlay``),
and the one atomic write everything else goes through (``files``)."""
